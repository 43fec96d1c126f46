"""SpeechBrain's own interfaces: stock WaveformEnhancement loads exported and packaged models, and
QualityStats answers MetricStats.summarize's fields."""
from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.inference.enhancement import WaveformEnhancement
from speechbrain.utils.metric_stats import MetricStats

from upcycle_se.errors import ConfigError
from upcycle_se.inference import HPARAMS_FILE, UpCycleEnhancement, default_model_dir
from upcycle_se.metrics import MetricWarning, QualityStats
from upcycle_se.metrics.stats import stoi_score


def harmonic(seconds: float, sr: int = 16000, f0: float = 150.0) -> np.ndarray:
    """Voiced-like ``[time]`` float32: 10 harmonics of ``f0`` under a 4 Hz syllable envelope."""
    t = np.arange(int(seconds * sr)) / sr
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 11))
    return (0.1 * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * voiced).astype(np.float32)


def copy_model(folder: Path, tmp_path: Path) -> Path:
    """A private copy: WaveformEnhancement links its files into ``savedir``, here the folder itself."""
    return Path(shutil.copytree(folder, tmp_path / folder.name))


@pytest.mark.parametrize("which", ["exported", "packaged"])
def test_stock_waveform_enhancement_loads_and_matches_upcycle_enhancement(which, exported_small_model, tmp_path):
    source = exported_small_model if which == "exported" else default_model_dir()
    folder = copy_model(source, tmp_path)
    stock = WaveformEnhancement.from_hparams(source=str(folder), savedir=str(folder))
    # fp32 as the stock interface runs it ("auto" would be bf16 on a CPU with bf16 hardware)
    ours = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu", "precision": "fp32"})
    noisy = torch.from_numpy(np.stack([harmonic(0.5), harmonic(0.5, f0=210)])) \
        + 0.02 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    enhanced = stock.enhance_batch(noisy)
    assert enhanced.shape == noisy.shape and torch.isfinite(enhanced).all()
    assert (enhanced - noisy).abs().max() > 1e-3  # the generator did something
    torch.testing.assert_close(enhanced, ours.enhance_batch(noisy), rtol=0, atol=1e-6)

    # enhance_file: SpeechBrain's loader resamples a 44.1 kHz stereo file to 16 kHz mono (AudioNormalizer).
    stereo = np.stack([harmonic(0.5, 44100), harmonic(0.5, 44100, f0=200)], axis=1)
    sf.write(tmp_path / "noisy.wav", stereo, 44100)
    out = stock.enhance_file(str(tmp_path / "noisy.wav"), output_filename=str(tmp_path / "enhanced.wav"))
    info = sf.info(tmp_path / "enhanced.wav")
    assert out.shape == (8000,) and (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    torch.testing.assert_close(out, ours.enhance_batch(ours.load_audio(tmp_path / "noisy.wav")[None])[0],
                               rtol=0, atol=1e-5)


def test_folders_exported_before_enhance_model_still_load(exported_small_model, tmp_path):
    folder = copy_model(exported_small_model, tmp_path)
    current = UpCycleEnhancement.from_hparams(source=folder)
    text = (folder / HPARAMS_FILE).read_text()
    start, end = text.index("enhance_model: !new:"), text.index("# How Pretrained.load_audio")
    (folder / HPARAMS_FILE).write_text(text[:start] + "modules:\n    generator: !ref <generator>\n\n" + text[end:])
    legacy = UpCycleEnhancement.from_hparams(source=folder)
    noisy = torch.from_numpy(harmonic(0.3))[None]
    torch.testing.assert_close(legacy.enhance_batch(noisy), current.enhance_batch(noisy), rtol=0, atol=0)
    (folder / HPARAMS_FILE).write_text(text[:start] + "modules: {}\n\n" + text[end:])
    with pytest.raises(ConfigError, match="no 'enhance_model' module"):
        UpCycleEnhancement.from_hparams(source=folder)


def test_quality_stats_answers_metricstats_fields_like_metricstats():
    clean = np.stack([harmonic(1.0)] * 3)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(clean.shape).astype(np.float32) * clean.std()
    noisy = clean + noise * np.array([0.3, 1.0, 3.0], dtype=np.float32)[:, None]  # about 10, 0, -10 dB
    ids = ["mild", "mid", "loud"]
    predict, target = torch.from_numpy(noisy), torch.from_numpy(clean)

    reference = MetricStats(metric=stoi_score, batch_eval=False)
    reference.append(ids, predict=predict, target=target)
    ours = QualityStats(metrics=("stoi", "ssnr"))
    ours.append(ids, predict=predict, target=target)
    expected = reference.summarize()
    assert expected["min_id"] == "loud" and expected["max_id"] == "mild"  # the data mean what we think
    for field in ("average", "min_score", "max_score"):
        assert ours.summarize(field) == pytest.approx(expected[field], abs=1e-9)
    assert (ours.summarize("min_id"), ours.summarize("max_id")) == ("loud", "mild")
    assert ours.summarize("average") == pytest.approx(ours.summarize("stoi"))
    assert set(ours.summarize()) == {"stoi", "ssnr"}  # the plain summary stays one mean per metric
    with pytest.raises(KeyError, match="neither among"):
        ours.summarize("wer")

    # 0.1 s is too short for STOI (NaN): left out of every field, with the usual warning.
    short = (predict[:1, :1600], target[:1, :1600])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        ours.append(["short"], predict=short[0], target=short[1])
    with pytest.warns(MetricWarning, match="stoi: 1 of 4 utterances undefined"):
        assert ours.summarize("average") == pytest.approx(expected["average"], abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        assert ours.summarize("min_id") == "loud"
        empty = QualityStats(metrics=("stoi",))
        empty.append(["short"], predict=short[0], target=short[1])
        assert math.isnan(empty.summarize("average")) and empty.summarize("max_id") is None
