"""Inference precision: resolving auto/fp32/bf16, the bf16 U-Net path (channels-last, STFT and mask in
fp32) and how close it stays to fp32. No timing: bf16 runs everywhere (emulated, slowly, without bf16
hardware), so these tests work on any CPU."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from upcycle_se.errors import ConfigError
from upcycle_se.inference import UpCycleEnhancement, default_model_dir
from upcycle_se.models import UpCycleGenerator
from upcycle_se.models import runtime
from upcycle_se.models.runtime import cpu_has_bf16, resolve_precision

# bf16 vs fp32 enhanced waveform, measured on this file's 1 s speech-like input: random small generator
# with spread batch-norm statistics 62.7 dB, the packaged model 58.3 dB (bf16 keeps 8 mantissa bits: one
# rounding is ~-54 dB, and the errors of ~30 layers add up without a trend).
MIN_BF16_SNR_DB = 35.0


def snr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - test).pow(2).sum().clamp_min(1e-30)))


def speech_like(seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """``[1, time]``: gliding harmonics with a syllable envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return torch.from_numpy(0.2 * env * voiced + 0.02 * rng.standard_normal(t.size)).float()[None]


@pytest.fixture(scope="module")
def generator() -> UpCycleGenerator:
    """A random ``small`` generator in evaluation mode whose batch norms are not the identity (so that
    folding them into bf16 convolutions is exercised)."""
    torch.manual_seed(0)
    gen = UpCycleGenerator.from_preset("small").eval()
    for module in gen.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)
    return gen


@pytest.fixture(scope="module")
def packaged_dir() -> Path:
    folder = default_model_dir()
    if not folder.is_dir():
        pytest.skip("the packaged model is not in this checkout")
    return folder


# ------------------------------------------------------------------------------------------ resolving
@pytest.mark.parametrize("has_bf16, expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_auto_is_bf16_only_on_cpus_with_bf16_hardware(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_precision("auto", "cpu") is expected
    assert resolve_precision("AUTO", torch.device("cpu")) is expected
    # explicit choices do not depend on the hardware
    assert resolve_precision("fp32", "cpu") is torch.float32
    assert resolve_precision("bf16", "cpu") is torch.bfloat16


def test_cpu_has_bf16_matches_the_kernels_cpu_flags():
    """An independent source: the flags Linux reports (AMX-BF16 or AVX512-BF16)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    assert cpu_has_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)


@pytest.mark.parametrize("bad", ["fp16", "bfloat16", "", "32"])
def test_unknown_precision_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError) as err:
        resolve_precision(bad, "cpu")
    message = str(err.value)
    assert "\n" not in message and "auto, fp32, bf16" in message and repr(bad) in message


# ----------------------------------------------------------------------------------- the bf16 path
class _Recorder(TorchFunctionMode):
    """Records (name, input dtype, channels-last) of every convolution and the dtype of every STFT."""

    def __init__(self):
        super().__init__()
        self.convs, self.ffts = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if "conv" in name and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            x = args[0]
            spatial = x.shape[2] * x.shape[3] > 1  # a [B, C, 1, 1] map has no layout to speak of
            self.convs.append((name, x.dtype, x.is_contiguous(memory_format=torch.channels_last) if spatial
                               else True))
        if name in ("stft", "istft"):
            self.ffts.append((name, args[0].dtype))
        return func(*args, **(kwargs or {}))


def test_bf16_runs_every_convolution_channels_last_in_bf16_and_the_stft_in_fp32(generator):
    gen = UpCycleGenerator(**generator.config).eval()
    gen.load_state_dict(generator.state_dict())
    gen.set_unet_dtype(torch.bfloat16)
    assert gen.unet_dtype is torch.bfloat16
    assert gen.stft.window.dtype is torch.float32
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.running_var.dtype is torch.float32 for m in norms)  # folded, rounded once

    wav = speech_like(0.3)
    with torch.inference_mode(), _Recorder() as rec:
        out = gen(wav)
    assert len(rec.convs) > 20
    assert {dtype for _, dtype, _ in rec.convs} == {torch.bfloat16}
    assert all(cl for _, _, cl in rec.convs), [c for c in rec.convs if not c[2]]
    # torch.stft gets the fp32 waveform, torch.istft the complex64 spectrum built from the fp32 mask
    assert rec.ffts == [("stft", torch.float32), ("istft", torch.complex64)]
    assert out.dtype is torch.float32 and out.shape == wav.shape


def test_mask_is_applied_in_fp32(generator, monkeypatch):
    gen = UpCycleGenerator(**generator.config).eval()
    gen.load_state_dict(generator.state_dict())
    gen.set_unet_dtype(torch.bfloat16)
    seen = []
    original = gen.apply_output
    monkeypatch.setattr(gen, "apply_output", lambda spec, est: seen.append((spec.dtype, est.dtype))
                        or original(spec, est))
    with torch.inference_mode():
        gen(speech_like(0.2))
    assert seen == [(torch.float32, torch.float32)]


def test_bf16_output_is_within_35_db_of_fp32_random_model(generator):
    wav = speech_like(1.0)
    gen = UpCycleGenerator(**generator.config).eval()
    gen.load_state_dict(generator.state_dict())
    with torch.inference_mode():
        ref = gen(wav)
        gen.set_unet_dtype(torch.bfloat16)
        low = gen(wav)
    assert low.dtype is torch.float32
    snr = snr_db(ref, low)
    assert MIN_BF16_SNR_DB <= snr < 120, snr  # close, but really computed in bf16 (not bit-equal)


def test_bf16_path_covers_whitening_norms_and_prelu():
    """The non-default layers (whitening batch norm, not foldable; PReLU with weights) run in bf16 too."""
    torch.manual_seed(1)
    gen = UpCycleGenerator.from_preset("small", whitening=True, activation="prelu").eval()
    wav = speech_like(0.5)
    with torch.inference_mode():
        ref = gen(wav)
        low = gen.set_unet_dtype(torch.bfloat16)(wav)
    assert MIN_BF16_SNR_DB <= snr_db(ref, low) < 120


def test_bf16_output_is_within_35_db_of_fp32_packaged_model(packaged_dir):
    wav = speech_like(1.0)[0]
    fp32 = UpCycleEnhancement.from_hparams(source=packaged_dir, run_opts={"precision": "fp32"})
    bf16 = UpCycleEnhancement.from_hparams(source=packaged_dir, run_opts={"precision": "bf16"})
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    ref = fp32.enhance_signal(wav, 16000, chunk_seconds=0)
    low = bf16.enhance_signal(wav, 16000, chunk_seconds=0)
    snr = snr_db(ref, low)
    assert MIN_BF16_SNR_DB <= snr < 120, snr


# ----------------------------------------------------------------------------- fp32 is unchanged
def test_fp32_interface_output_is_bit_identical_to_the_plain_generator(packaged_dir, monkeypatch):
    """fp32 (explicit, or auto on a CPU without bf16) is exactly the generator as it always ran, and a
    bf16 round trip restores the float32 weights exactly."""
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    wav = speech_like(0.5)
    auto = UpCycleEnhancement.from_hparams(source=packaged_dir)
    assert auto.precision == "fp32"
    fp32 = UpCycleEnhancement.from_hparams(source=packaged_dir, run_opts={"precision": "fp32"})
    plain = UpCycleGenerator(**fp32.mods.enhance_model.generator.config).eval()
    plain.load_state_dict(torch.load(packaged_dir / "generator.ckpt", map_location="cpu", weights_only=True))
    plain.max_attenuation_db = fp32.max_attenuation_db  # the folder's own limit (20 dB for the default model)
    with torch.no_grad():
        expected = plain(wav)
    assert torch.equal(auto.enhance_batch(wav), expected)
    assert torch.equal(fp32.enhance_batch(wav), expected)

    assert fp32.set_precision("bf16") == "bf16"
    assert not torch.equal(fp32.enhance_batch(wav), expected)
    assert fp32.set_precision("fp32") == "fp32"
    assert torch.equal(fp32.enhance_batch(wav), expected)


def test_set_unet_dtype_float32_on_a_float32_model_changes_nothing(generator):
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    generator.set_unet_dtype(torch.float32)
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)
    with pytest.raises(ConfigError):
        generator.set_unet_dtype(torch.float16)


# ------------------------------------------------------------------------------- the interface option
def test_interface_precision_from_run_opts_and_hparams(packaged_dir, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert UpCycleEnhancement.from_hparams(source=packaged_dir).precision == "bf16"  # auto on bf16 hardware
    hparam = {"overrides": {"precision": "fp32"}, "overrides_must_match": False}  # a `precision:` line
    assert UpCycleEnhancement.from_hparams(source=packaged_dir, **hparam).precision == "fp32"
    # the run option wins over the hparam, as SpeechBrain's run options do
    enh = UpCycleEnhancement.from_hparams(source=packaged_dir, run_opts={"precision": "bf16"}, **hparam)
    assert enh.precision == "bf16" and enh.mods.enhance_model.generator.unet_dtype is torch.bfloat16
    # SpeechBrain's own autocast stays off: the model itself runs in bf16
    assert isinstance(enh.inference_ctx.context, contextlib.nullcontext)
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        UpCycleEnhancement.from_hparams(source=packaged_dir, run_opts={"precision": "fp16"})


@pytest.mark.slow
def test_compiled_interface_matches_eager_and_compiles_afresh_after_a_precision_change():
    """SpeechBrain's `compile` run option: frozen inductor graphs give the eager numbers; after
    set_precision the model is not served by the graph compiled for the old precision."""
    from upcycle_se.inference import packaged_model_dir

    folder = packaged_model_dir("small")  # the quickest to compile
    x = speech_like(0.5)
    eager = {p: UpCycleEnhancement.from_hparams(source=folder, run_opts={"precision": p}).enhance_batch(x)
             for p in ("fp32", "bf16")}
    enh = UpCycleEnhancement.from_hparams(source=folder, run_opts={"precision": "bf16", "compile": True})
    assert enh.compiled and enh.precision == "bf16"
    assert snr_db(eager["bf16"], enh.enhance_batch(x)) >= MIN_BF16_SNR_DB
    assert enh.set_precision("fp32") == "fp32" and enh.compiled
    # a stale bf16 graph would sit at bf16's distance from fp32 (~58 dB here), not at float rounding
    assert snr_db(eager["fp32"], enh.enhance_batch(x)) >= 100.0
    assert not UpCycleEnhancement.from_hparams(source=folder, run_opts={"precision": "fp32"}).compiled


# ------------------------------------------------------------------ training under bf16 autocast
def _grouped_dilated_convs(gen: UpCycleGenerator):
    from upcycle_se.nnet.complex import ComplexConv2d

    return [m for m in gen.modules() if isinstance(m, ComplexConv2d) and m.groups > 1 and max(m.dilation) > 1]


def test_bf16_training_keeps_channels_last_and_routes_grouped_dilated_convolutions_to_fp32(monkeypatch):
    """Under bf16 autocast the U-Net's feature maps are channels-last (oneDNN's fast layout); the grouped
    dilated convolutions, whose bf16 channels-last backward crashes oneDNN, and only they, run in fp32."""
    from upcycle_se.nnet.complex import ComplexConv2d

    torch.manual_seed(0)
    gen = UpCycleGenerator.from_preset("small").train()
    expected = _grouped_dilated_convs(gen)
    assert len(expected) >= 2  # the ASPP branches
    routed, original = [], ComplexConv2d._bf16_backward_crashes

    def spy(self, x, weight):
        hit = original(self, x, weight)
        if hit:
            routed.append(self)
        return hit

    monkeypatch.setattr(ComplexConv2d, "_bf16_backward_crashes", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16), _Recorder() as rec:
        y = gen(speech_like(0.3))
    y.float().pow(2).mean().backward()
    assert len(rec.convs) > 20
    assert all(cl for _, _, cl in rec.convs), [c for c in rec.convs if not c[2]]
    assert {id(m) for m in routed} == {id(m) for m in expected}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gen.parameters())


@pytest.mark.parametrize("autocast, grad, expected", [(True, True, True), (False, True, False),
                                                     (True, False, False)])
def test_route_around_applies_only_to_bf16_backward(autocast, grad, expected):
    torch.manual_seed(0)
    conv = _grouped_dilated_convs(UpCycleGenerator.from_preset("small"))[0]
    x = torch.randn(1, 2 * conv.in_channels, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(grad):
        assert conv._bf16_backward_crashes(x, conv.block_weight()) is expected
    assert conv._bf16_backward_crashes(x.contiguous(), conv.block_weight()) is False  # NCHW: not affected


def test_bf16_autocast_gradients_follow_fp32():
    """One training step's generator gradients under bf16 autocast point the same way as in fp32
    (measured cosine 0.998 on this input; bf16 keeps 8 mantissa bits)."""
    torch.manual_seed(0)
    gen = UpCycleGenerator.from_preset("small").train()
    wav, target = speech_like(0.5), speech_like(0.5, seed=1) * 0.5

    def grads(autocast: bool):
        gen.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = gen(wav)
        (y.float() - target).abs().mean().backward()
        return torch.cat([p.grad.flatten() for p in gen.parameters()])

    state = {k: v.clone() for k, v in gen.state_dict().items()}
    g32 = grads(False)
    gen.load_state_dict(state)  # the same batch-norm statistics for the second pass
    g16 = grads(True)
    cosine = float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))
    assert 0.98 < cosine < 1.0, cosine


def test_recipe_brain_trains_and_evaluates_under_speechbrains_bf16_run_options(tmp_path):
    """``--precision=bf16 --eval_precision=bf16`` (SpeechBrain's run options) on the recipe's own Brain:
    one cycle-GAN step and one evaluation batch, finite, with the weights kept in fp32 (master weights)."""
    import speechbrain as sb
    from speechbrain.dataio.batch import PaddedBatch

    from upcycle_se.brain import UpCycleBrain
    from upcycle_se.recipe import load_hparams

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle_small.yaml"
    hp = load_hparams(str(recipe), {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"),
                                    "crop_samples": 4000, "batch_size": 2, "n_jobs": 1, "valid_metrics": ["pesq"],
                                    "tensorboard_logger": None})
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, checkpointer=hp["checkpointer"],
                         run_opts={"device": "cpu", "precision": "bf16", "eval_precision": "bf16"})
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    wav = speech_like(0.25)[0]
    batch = PaddedBatch([{"id": f"u{i}", "noisy_sig": wav + 0.05 * torch.randn_like(wav), "clean_sig": wav}
                         for i in range(2)])
    before = brain.modules["gen_n2c"].head.weight_real.detach().clone()
    loss = brain.fit_batch(batch)
    assert torch.isfinite(loss) and brain.optimizer_step == 1
    assert brain.modules["gen_n2c"].head.weight_real.dtype is torch.float32
    assert not torch.equal(before, brain.modules["gen_n2c"].head.weight_real)  # it stepped
    brain.on_stage_start(sb.Stage.VALID, epoch=1)
    assert torch.isfinite(brain.evaluate_batch(batch, sb.Stage.VALID))
