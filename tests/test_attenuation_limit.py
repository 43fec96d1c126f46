"""The attenuation limit (upcycle_se.models.attenuation): a floor on the mask gain of both generator classes,
reached from Python (UpCycleEnhancement), the command line (--max-attenuation-db) and the recipes' Brain."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch

from upcycle_se.errors import ConfigError
from upcycle_se.models import PaperGenerator, UpCycleGenerator
from upcycle_se.models.attenuation import check_max_attenuation_db, max_attenuation, set_max_attenuation_db

GENERATORS = {
    "redesign_complex": lambda: UpCycleGenerator.from_preset("small"),
    "redesign_magnitude": lambda: UpCycleGenerator.from_preset("small", mask_type="magnitude"),
    "paper": lambda: PaperGenerator.from_preset("paper_small"),
}


def _generator(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return GENERATORS[kind]().eval()


def _spectra(gen: torch.nn.Module, wav: torch.Tensor):
    """(input spectrum, output spectrum), both ``[batch, 2, freq, frames]`` over the same frames."""
    with torch.no_grad():
        _, out_spec = gen.forward_with_spec(wav)
        if isinstance(gen, PaperGenerator):  # it pads the waveform to a valid length first
            wav = torch.nn.functional.pad(wav, (0, gen.valid_length(wav.shape[-1]) - wav.shape[-1]))
        in_spec = gen.stft.stft(wav)[..., : out_spec.shape[-1]]
    return in_spec, out_spec


def _magnitude(spec: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(spec[:, 0] ** 2 + spec[:, 1] ** 2)


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return 0.1 * torch.randn(2, 6000, generator=g)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_a_tiny_limit_changes_nothing(kind, wav):
    """300 dB floors the gain at 1e-15, under any gain tanh(|M|) takes: the output is bit for bit the
    unlimited one."""
    gen = _generator(kind)
    assert gen.max_attenuation_db is None and gen.gain_floor is None
    with torch.no_grad():
        free = gen(wav)
        gen.max_attenuation_db = 300
        limited = gen(wav)
    assert torch.equal(free, limited)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("limit", [0.0, 3.0, 12.0, 30.0])
def test_every_bin_keeps_at_least_the_floor(kind, limit, wav):
    """With limit L, |Y| / |X| >= 10^(-L/20) in every bin of a random input; the bins the free network
    attenuated more than that are the ones that change, and they come up to the floor."""
    gen = _generator(kind)
    x, y_free = _spectra(gen, wav)
    gen.max_attenuation_db = limit
    _, y = _spectra(gen, wav)
    mag_x = _magnitude(x)
    # Bins well above the 1e-8 the networks add under their square roots (sqrt(|X|^2 + 1e-8) in the authors')
    keep = mag_x > 1e-2
    assert float(keep.float().mean()) > 0.5
    gain = (_magnitude(y) / mag_x.clamp_min(1e-12))[keep]
    floor = 10 ** (-limit / 20)
    assert float(gain.min()) >= floor * (1 - 1e-4)
    free_gain = (_magnitude(y_free) / mag_x.clamp_min(1e-12))[keep]
    below = free_gain < floor
    if limit == 0:  # tanh(|M|) < 1: nearly every bin is below a 0 dB floor
        assert float(below.float().mean()) > 0.5
    torch.testing.assert_close(gain[~below], free_gain[~below], rtol=1e-4, atol=1e-6)  # the rest untouched
    torch.testing.assert_close(gain[below], torch.full_like(gain[below], floor), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_zero_db_keeps_the_input_magnitudes(kind, wav):
    """0 dB: gain 1 in every bin, so the output spectrum has the input's magnitudes (only the mask's phase
    rotation is left; the magnitude-only mask then gives the input itself)."""
    gen = _generator(kind)
    gen.max_attenuation_db = 0
    x, y = _spectra(gen, wav)
    torch.testing.assert_close(_magnitude(y), _magnitude(x), rtol=1e-4, atol=1e-6)
    if kind == "redesign_magnitude":
        with torch.no_grad():
            torch.testing.assert_close(gen(wav), wav, rtol=1e-4, atol=1e-5)


def test_the_limit_is_not_part_of_config_or_weights():
    gen = _generator("redesign_complex")
    config, keys = gen.config, set(gen.state_dict())
    gen.max_attenuation_db = 12
    assert gen.config == config and set(gen.state_dict()) == keys
    assert UpCycleGenerator(**gen.config).max_attenuation_db is None  # a rebuilt model has no limit
    assert math.isclose(gen.gain_floor, 10 ** (-12 / 20))


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), "loud", True])
def test_bad_values_are_one_line_errors(bad):
    gen = _generator("redesign_complex")
    with pytest.raises(ConfigError) as err:
        gen.max_attenuation_db = bad
    assert "\n" not in str(err.value) and "max_attenuation_db" in str(err.value)
    assert gen.max_attenuation_db is None
    with pytest.raises(ConfigError):
        check_max_attenuation_db(bad)


def test_valid_spellings():
    assert check_max_attenuation_db(None) is None and check_max_attenuation_db("null") is None
    assert check_max_attenuation_db("12") == 12.0 and check_max_attenuation_db(0) == 0.0


def test_set_on_wrapped_generators_and_restored_after_a_block():
    """Set through a wrapper (as an EnhanceModel or DDP holds the generator); a map generator has no mask,
    so a module with only that one refuses a limit; the ``with`` form gives the old setting back."""
    from upcycle_se.inference import EnhanceModel

    gen = _generator("redesign_complex")
    wrapper = EnhanceModel(gen)
    assert set_max_attenuation_db(wrapper, 9) == [gen] and gen.max_attenuation_db == 9
    with max_attenuation(wrapper, 20):
        assert gen.max_attenuation_db == 20
    assert gen.max_attenuation_db == 9
    with max_attenuation(wrapper, None):
        assert gen.max_attenuation_db == 9
    with pytest.raises(ConfigError, match="masking"):
        set_max_attenuation_db(UpCycleGenerator.from_preset("small", mode="map"), 6)
    set_max_attenuation_db(UpCycleGenerator.from_preset("small", mode="map"), None)  # no limit: fine


# ------------------------------------------------------------------------------------ Python interface
@pytest.fixture(scope="module")
def model_dir(exported_small_model):
    return exported_small_model


def _generator_of(enhancer):
    return enhancer.mods["enhance_model"].generator


def test_enhancement_set_max_attenuation_db(model_dir, wav):
    from upcycle_se.inference import UpCycleEnhancement

    enh = UpCycleEnhancement.from_hparams(model_dir, run_opts={"precision": "fp32"})
    assert enh.max_attenuation_db is None and _generator_of(enh).max_attenuation_db is None
    free = enh.enhance_batch(wav)
    # 1 dB: above the random model's gains (tanh(|M|) ~ 0.76, -2.4 dB), so the limit acts
    assert enh.set_max_attenuation_db(1) == 1.0 and _generator_of(enh).max_attenuation_db == 1.0
    limited = enh.enhance_batch(wav)
    assert not torch.allclose(free, limited)
    enh.set_max_attenuation_db(None)
    assert torch.equal(enh.enhance_batch(wav), free)
    with pytest.raises(ConfigError):
        enh.set_max_attenuation_db(-3)
    assert enh.max_attenuation_db is None


@pytest.mark.parametrize("how", ["run_opts", "overrides"])
def test_limit_honoured_at_load(model_dir, how):
    from upcycle_se.inference import UpCycleEnhancement

    kwargs = {"run_opts": {"precision": "fp32", "max_attenuation_db": 15}} if how == "run_opts" else \
        {"run_opts": {"precision": "fp32"}, "overrides": {"max_attenuation_db": 15}}
    enh = UpCycleEnhancement.from_hparams(model_dir, **kwargs)
    assert enh.max_attenuation_db == 15.0 and _generator_of(enh).max_attenuation_db == 15.0


def test_bad_limit_at_load_is_one_line(model_dir):
    from upcycle_se.inference import UpCycleEnhancement

    with pytest.raises(ConfigError) as err:
        UpCycleEnhancement.from_hparams(model_dir, run_opts={"max_attenuation_db": float("nan")})
    assert "\n" not in str(err.value) and "max_attenuation_db" in str(err.value)


# ------------------------------------------------------------------------------------ command line
def test_cli_option_reaches_the_model(model_dir, tmp_path, monkeypatch, capsys):
    from upcycle_se.cli import main
    from upcycle_se.inference import UpCycleEnhancement

    t = np.arange(8000) / 16000
    sig = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size))
    sf.write(tmp_path / "a.wav", sig.astype(np.float32), 16000)
    seen, real = [], UpCycleEnhancement.from_hparams

    def spy(*args, **kwargs):
        enh = real(*args, **kwargs)
        seen.append(_generator_of(enh).max_attenuation_db)
        return enh

    monkeypatch.setattr(UpCycleEnhancement, "from_hparams", spy)
    outs = {}
    for name, extra in (("free", []), ("limited", ["--max-attenuation-db", "1"])):
        assert main(["enhance", str(tmp_path / "a.wav"), "-o", str(tmp_path / name), "--model", str(model_dir),
                     "--precision", "fp32", *extra]) == 0
        outs[name] = sf.read(tmp_path / name / "a.wav")[0]
    assert seen == [None, 1.0]
    assert not np.allclose(outs["free"], outs["limited"])


def test_the_packaged_default_carries_its_limit_in_both_interfaces_and_none_lifts_it(tmp_path, capsys):
    from speechbrain.inference.enhancement import WaveformEnhancement

    from upcycle_se.cli import main
    from upcycle_se.inference import UpCycleEnhancement, packaged_model_dir

    folder = packaged_model_dir("default")
    wav = 0.1 * torch.randn(1, 12345, generator=torch.Generator().manual_seed(4))
    ours = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu", "precision": "fp32"})
    stock = WaveformEnhancement.from_hparams(source=str(folder), savedir=str(folder), run_opts={"device": "cpu"})
    assert ours.max_attenuation_db == 20.0 == _generator_of(stock).max_attenuation_db
    limited = ours.enhance_batch(wav)
    assert torch.equal(limited, stock.enhance_batch(wav, lengths=torch.ones(1)))
    lifted = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu", "precision": "fp32",
                                                                      "max_attenuation_db": "none"})
    assert lifted.max_attenuation_db is None and not torch.allclose(lifted.enhance_batch(wav), limited)
    assert UpCycleEnhancement.from_hparams(source=packaged_model_dir("small")).max_attenuation_db is None
    sf.write(tmp_path / "a.wav", wav[0].numpy(), 16000)
    for name, extra in (("own", []), ("none", ["--max-attenuation-db", "none"])):
        assert main(["enhance", str(tmp_path / "a.wav"), "-o", str(tmp_path / name), "--precision", "fp32",
                     *extra]) == 0
    own, none = (sf.read(tmp_path / n / "a.wav")[0] for n in ("own", "none"))
    assert np.allclose(own, limited[0].numpy(), atol=1e-4) and not np.allclose(own, none, atol=1e-4)


def test_cli_bad_limit_is_one_error_line_before_any_work(model_dir, tmp_path, capsys):
    from upcycle_se.cli import main

    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "a.wav"), "-o", str(out), "--model", str(model_dir),
                 "--max-attenuation-db", "-6"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "max_attenuation_db must be" in lines[0] and "-6" in lines[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------ recipes' Brain
class _Spy(UpCycleGenerator):
    """Records the limit it runs with."""

    def forward(self, wav, return_spec=False):
        self.calls.append(self.max_attenuation_db)
        return super().forward(wav, return_spec=return_spec)


@pytest.mark.parametrize("limit", [None, 12.0])
def test_brain_applies_the_hparam_outside_training_only(limit):
    from upcycle_se.brain import UpCycleBrain

    gen = _Spy(**UpCycleGenerator.from_preset("small").config).eval()
    gen.calls = []
    brain = SimpleNamespace(device="cpu", hparams=SimpleNamespace(max_attenuation_db=limit),
                            _enhancer=lambda stage: gen)
    brain._max_attenuation_db = lambda: UpCycleBrain._max_attenuation_db(brain)
    batch = SimpleNamespace(noisy_sig=(torch.randn(1, 3000), torch.ones(1)))
    batch.to = lambda device: batch
    for stage in (sb.Stage.TRAIN, sb.Stage.VALID, sb.Stage.TEST):
        with torch.no_grad():
            UpCycleBrain.compute_forward(brain, batch, stage)
    assert gen.calls == [None, limit, limit]
    assert gen.max_attenuation_db is None  # given back after each evaluation batch


def test_brain_and_recipe_refuse_a_bad_hparam():
    from upcycle_se.brain import UpCycleBrain
    from upcycle_se.recipe import validate_hparams

    brain = SimpleNamespace(hparams=SimpleNamespace(max_attenuation_db=-1))
    with pytest.raises(ConfigError, match="max_attenuation_db"):
        UpCycleBrain._max_attenuation_db(brain)
    with pytest.raises(ConfigError, match="max_attenuation_db"):
        validate_hparams({"max_attenuation_db": float("nan")})
    validate_hparams({"max_attenuation_db": None})
    validate_hparams({"max_attenuation_db": 12})
