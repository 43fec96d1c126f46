"""Generators and discriminators: sizes, any-length I/O, output modes, batch independence, gradients,
ONNX export, profiling."""

import json

import numpy as np
import pytest
import torch

from upcycle_se.errors import ConfigError
from upcycle_se.models import MultiScaleDiscriminator, UpCycleGenerator, WaveDiscriminator, export_onnx
from upcycle_se.models.profile import count_parameters, macs_per_second
from upcycle_se.nnet.complex import ComplexBatchNorm2d


def warm_up_batch_norm(model: torch.nn.Module, length: int = 4000, steps: int = 3) -> None:
    """A few training-mode passes so running statistics differ from their init."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(2, length) * 0.3)
    model.eval()


@pytest.fixture(scope="module")
def small_gen():
    torch.manual_seed(0)
    gen = UpCycleGenerator.from_preset("small")
    warm_up_batch_norm(gen)
    return gen


@pytest.fixture(scope="module")
def paper_gen():
    torch.manual_seed(0)
    return UpCycleGenerator()


def test_paper_generator_size_and_defaults(paper_gen):
    n_params = count_parameters(paper_gen)
    assert n_params == 9_343_330  # the figure in the generator's docstring; the paper reports ~9.3 M
    assert paper_gen.config == UpCycleGenerator.from_preset("redesign").config
    assert paper_gen.mode == "mask" and paper_gen.mask_type == "complex"
    cfg = paper_gen.config
    assert cfg["encoder_channels"] == [16, 16, 64, 256] and cfg["proj_kernel"] == [5, 7]
    assert cfg["aspp_rates"] == [3, 9] and (cfg["n_fft"], cfg["win_length"], cfg["hop_length"]) == (512, 400, 100)
    assert paper_gen.proj.in_channels == 1 and paper_gen.head.out_channels == 1


def test_small_preset_is_much_smaller_and_cheaper(small_gen, paper_gen):
    assert count_parameters(small_gen) == 127_634
    assert count_parameters(small_gen) < count_parameters(paper_gen) / 50
    macs = macs_per_second(small_gen, seconds=1.0)
    assert 0.9e9 < macs < 1.4e9  # documented: 1.13 GMACs per second of audio


def test_base_preset_sits_between_small_and_paper(small_gen, paper_gen):
    torch.manual_seed(0)
    base = UpCycleGenerator.from_preset("base").eval()
    assert count_parameters(base) == 1_785_794  # the figure in the generator's docstring
    assert base.config["encoder_channels"] == [8, 16, 32, 128] and base.config["bottom_res_blocks"] == 2
    assert 10 * count_parameters(small_gen) < count_parameters(base) < count_parameters(paper_gen) / 4
    macs = macs_per_second(base, seconds=1.0)
    assert 3.6e9 < macs < 4.6e9  # documented: 4.18 GMACs per second of audio, a quarter of the paper's
    wav = torch.randn(2, 12345) * 0.1
    with torch.no_grad():
        out, spec = base.forward_with_spec(wav)
    assert out.shape == (2, 12345) and spec.shape == (2, 2, 257, 124) and torch.isfinite(out).all()
    mapper = UpCycleGenerator.from_preset("base", mode="map")
    assert count_parameters(mapper) == count_parameters(base) and mapper.mode == "map"


@pytest.mark.parametrize("length", [1, 99, 801, 12345, 16000, 32000, 116800])  # ..., 1 s, 2 s, 7.3 s
def test_output_length_equals_input_length(small_gen, length):
    batch = 2 if length < 32000 else 1
    wav = torch.randn(batch, length) * 0.1
    with torch.no_grad():
        out, spec = small_gen.forward_with_spec(wav)
    assert out.shape == (batch, length) and torch.isfinite(out).all()
    assert spec.shape == (batch, 2, 257, length // 100 + 1)


def test_paper_generator_any_length(paper_gen):
    paper_gen.eval()
    with torch.no_grad():
        for length in (803, 4321):
            assert paper_gen(torch.randn(1, length) * 0.1).shape == (1, length)


def test_forward_with_spec_returns_the_spectrum_of_the_output(small_gen):
    wav = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        out, spec = small_gen.forward_with_spec(wav)
        torch.testing.assert_close(out, small_gen.stft.istft(spec, 8000))
        torch.testing.assert_close(out, small_gen(wav))


def polar(spec: torch.Tensor):
    return spec.pow(2).sum(1).sqrt(), torch.atan2(spec[:, 1], spec[:, 0])


def test_complex_mask_is_the_dccrn_e_polar_mask(small_gen):
    torch.manual_seed(1)
    x = small_gen.stft.stft(torch.randn(1, 4000))
    m = torch.randn_like(x) * 2
    y = small_gen.apply_output(x, m)
    (mag_x, ph_x), (mag_m, ph_m), (mag_y, ph_y) = polar(x), polar(m), polar(y)
    torch.testing.assert_close(mag_y, torch.tanh(mag_m) * mag_x, atol=1e-4, rtol=1e-4)
    # angle(Y) = angle(X) + angle(M) modulo 2 pi (compared on the unit circle; |X| > 0.1 bins only).
    keep = mag_x > 0.1
    diff = torch.polar(torch.ones_like(ph_y), ph_y - ph_x - ph_m)[keep]
    torch.testing.assert_close(diff, torch.ones_like(diff), atol=1e-3, rtol=0)


def test_magnitude_mask_keeps_the_noisy_phase_and_map_mode_is_direct():
    torch.manual_seed(2)
    gen = UpCycleGenerator.from_preset("small", mask_type="magnitude")
    x = gen.stft.stft(torch.randn(1, 4000))
    m = torch.randn_like(x) * 2
    y = gen.apply_output(x, m)
    (mag_x, ph_x), (mag_m, _), (mag_y, ph_y) = polar(x), polar(m), polar(y)
    torch.testing.assert_close(mag_y, torch.tanh(mag_m) * mag_x, atol=1e-4, rtol=1e-4)
    keep = mag_x > 0.1
    torch.testing.assert_close(torch.cos(ph_y - ph_x)[keep], torch.ones(int(keep.sum())), atol=1e-4, rtol=0)
    assert (mag_y <= mag_x + 1e-6).all()
    mapper = UpCycleGenerator.from_preset("small", mode="map")
    assert torch.equal(mapper.apply_output(x, m), m)


def test_modes_are_mask_and_map_only():
    """The removed ``residual`` clean->noisy mode is refused in one line."""
    with pytest.raises(ConfigError, match=r"generator mode must be one of \('mask', 'map'\), got 'residual'"):
        UpCycleGenerator.from_preset("small", mode="residual")


def test_mask_mode_starts_near_a_pass_through(paper_gen):
    """Head bias 1: |M| ~ 1 at init, so the output keeps most of the input (not muted)."""
    torch.manual_seed(3)
    wav = torch.randn(1, 8000) * 0.1
    paper_gen.eval()
    with torch.no_grad():
        out = paper_gen(wav)
    ratio = float(out.norm() / wav.norm())
    assert 0.3 < ratio < 1.0


@pytest.mark.parametrize("overrides", [{}, {"whitening": True, "activation": "prelu"}, {"mode": "map"}])
def test_eval_batch_items_are_independent(overrides):
    torch.manual_seed(4)
    gen = UpCycleGenerator.from_preset("small", **overrides)
    warm_up_batch_norm(gen)
    wav = torch.randn(3, 6789) * 0.2
    with torch.no_grad():
        batch = gen(wav)
        alone = torch.cat([gen(wav[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)
    assert (batch[0] - batch[1]).abs().max() > 1e-3  # distinct inputs, distinct outputs


def assert_every_parameter_learns(model: torch.nn.Module) -> None:
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"no or non-finite gradient: {bad}"
    zero = [n for n, p in model.named_parameters() if p.grad.abs().max() == 0]
    assert not zero, f"zero gradient: {zero}"


def test_gradient_reaches_every_parameter_of_the_paper_generator(paper_gen):
    torch.manual_seed(5)
    paper_gen.train()
    paper_gen.zero_grad()
    noisy, clean = torch.randn(2, 3200) * 0.2, torch.randn(2, 3200) * 0.2
    out, spec = paper_gen.forward_with_spec(noisy)
    loss = (out - clean).abs().mean() + spec.abs().mean()
    loss.backward()
    assert_every_parameter_learns(paper_gen)
    paper_gen.zero_grad()
    paper_gen.eval()


@pytest.mark.parametrize("overrides", [{"mode": "map"}, {"mask_type": "magnitude", "whitening": True}])
def test_gradient_reaches_every_parameter_of_other_variants(overrides):
    torch.manual_seed(6)
    gen = UpCycleGenerator.from_preset("small", **overrides).train()
    gen(torch.randn(2, 3200) * 0.2).pow(2).mean().backward()
    assert_every_parameter_learns(gen)


def test_whitening_option_reaches_every_batch_norm():
    gen = UpCycleGenerator.from_preset("small", whitening=True)
    norms = [m for m in gen.modules() if isinstance(m, ComplexBatchNorm2d)]
    assert norms and all(m.whitening for m in norms)


def test_config_is_json_and_rebuilds_the_model(small_gen):
    cfg = json.loads(json.dumps(small_gen.config))
    rebuilt = UpCycleGenerator(**cfg)
    rebuilt.load_state_dict(small_gen.state_dict())
    rebuilt.eval()
    wav = torch.randn(1, 5000)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wav), small_gen(wav))
    assert rebuilt.config == small_gen.config
    # Overrides on top of a preset, and the preset's own values.
    gen = UpCycleGenerator.from_preset("small", mode="map", aspp_rates=(2, 4))
    assert gen.config["mode"] == "map" and gen.config["aspp_rates"] == [2, 4]
    assert gen.config["encoder_channels"] == [8, 8, 16, 32]


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError):
        UpCycleGenerator.from_preset("huge")
    with pytest.raises(ConfigError):
        UpCycleGenerator(mode="denoise")
    with pytest.raises(ConfigError):
        UpCycleGenerator(mask_type="phase")
    with pytest.raises(ConfigError):
        UpCycleGenerator(encoder_channels=[16])
    with pytest.raises(ValueError):
        UpCycleGenerator.from_preset("small")(torch.zeros(2, 1, 100))


def test_onnx_export_matches_eager_with_dynamic_batch_and_time(paper_gen, tmp_path):
    import onnxruntime as ort

    paper_gen.eval()
    path = tmp_path / "gen_n2c.onnx"
    export_onnx(paper_gen, path, example_length=4000)
    assert paper_gen.stft.backend == "torch" and not paper_gen.training  # restored
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(7)
    for shape in [(1, 4000), (2, 6543), (1, 333)]:
        wav = torch.randn(*shape) * 0.2
        with torch.no_grad():
            eager = paper_gen(wav).numpy()
        (onnx_out,) = session.run(None, {"wav": wav.numpy()})
        assert onnx_out.shape == shape
        np.testing.assert_allclose(onnx_out, eager, atol=1e-5 * np.abs(eager).max(), rtol=0)


def test_onnx_export_of_the_whitening_small_generator(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(8)
    gen = UpCycleGenerator.from_preset("small", whitening=True)
    warm_up_batch_norm(gen)
    export_onnx(gen, tmp_path / "g.onnx")
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    wav = torch.randn(3, 12001) * 0.2
    with torch.no_grad():
        eager = gen(wav).numpy()
    np.testing.assert_allclose(session.run(None, {"wav": wav.numpy()})[0], eager, atol=1e-5 * np.abs(eager).max())


# Discriminators -------------------------------------------------------------------------------------


def test_wave_discriminator_structure_and_output():
    disc = WaveDiscriminator()  # MelGAN sizes
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv1d)]
    assert all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)  # weight norm
    strided = [c for c in convs if c.stride[0] > 1]
    assert [c.stride[0] for c in strided] == [4, 4, 4, 4]
    assert [c.groups for c in strided] == [4, 16, 64, 256]
    assert count_parameters(disc) == 5_641_362
    scores = disc(torch.randn(2, 16000))
    assert scores.shape == (2, 1, 63)  # hop 4**4 = 256 samples


@pytest.mark.parametrize("length", [1, 255, 4097])
def test_discriminators_take_any_length(length):
    msd = MultiScaleDiscriminator.from_preset("small")
    scores = msd(torch.randn(2, length))
    assert len(scores) == 3
    assert all(s.shape[:2] == (2, 1) and s.shape[2] >= 1 for s in scores)


def test_multi_scale_discriminator_scales_and_independence():
    torch.manual_seed(9)
    msd = MultiScaleDiscriminator.from_preset("small", n_scales=3)
    wav = torch.randn(3, 16000)
    scores, features = msd.forward_with_features(wav)
    assert [s.shape[-1] for s in scores] == [63, 32, 16]
    assert len(features) == 3 and all(len(f) == 6 for f in features)
    # Each scale is its own discriminator (separate weights).
    assert msd.discriminators[0].score.parametrizations.weight.original0.data_ptr() != (
        msd.discriminators[1].score.parametrizations.weight.original0.data_ptr()
    )
    alone = msd(wav[1:2])
    for s_batch, s_alone in zip(scores, alone):
        torch.testing.assert_close(s_batch[1:2], s_alone, atol=1e-5, rtol=1e-5)


def test_discriminator_gradients_and_config():
    torch.manual_seed(10)
    msd = MultiScaleDiscriminator.from_preset("small")
    wav = torch.randn(2, 8000, requires_grad=True)
    sum(s.pow(2).mean() for s in msd(wav)).backward()
    assert_every_parameter_learns(msd)
    assert wav.grad.abs().max() > 0  # the generator is trained through it
    cfg = json.loads(json.dumps(msd.config))
    assert cfg["n_scales"] == 3 and cfg["max_channels"] == 128
    assert count_parameters(MultiScaleDiscriminator(**cfg)) == count_parameters(msd) == 355_422
    assert count_parameters(MultiScaleDiscriminator()) == 3 * 5_641_362
    with pytest.raises(ConfigError):
        WaveDiscriminator.from_preset("huge")


def test_macs_per_second_counts_convolutions_exactly():
    class Wave(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 4, 3, stride=2, padding=1)

        def forward(self, wav):
            return self.conv(wav.unsqueeze(1))

    # 16000 samples, stride 2 -> 8000 outputs x 4 channels x 3 taps = 96,000 MACs per second.
    assert macs_per_second(Wave(), seconds=2.0) == 96_000
    assert count_parameters(Wave()) == 4 * 3 + 4


def test_bf16_autocast_training_step_on_cpu():
    """Mixed precision (``--precision=bf16``) forward + backward of both networks on CPU.

    Run in a subprocess: the failure this guards against (bf16 channels-last convolution backward in
    oneDNN) is a segmentation fault, which would take the whole test session down.
    """
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from upcycle_se.models import UpCycleGenerator, MultiScaleDiscriminator\n"
        "g = UpCycleGenerator.from_preset('small'); d = MultiScaleDiscriminator.from_preset('small', n_scales=1)\n"
        "x = torch.randn(2, 4000)\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    y, spec = g(x, return_spec=True); score = d(y)[0]\n"
        "loss = y.float().pow(2).mean() + score.float().mean()\n"
        "loss.backward()\n"
        "grads = [p.grad for p in g.parameters()]\n"
        "assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)\n"
        "print(y.shape[-1], spec.dtype)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["4000", "torch.float32"]
