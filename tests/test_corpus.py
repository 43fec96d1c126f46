"""The offline corpus builder: VoiceBank-DEMAND layout, rates, determinism, SNRs, disjoint splits, errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.cli import main as cli_main
from upcycle_se.data import noise as N
from upcycle_se.data.corpus import PRESETS, build_corpus, build_preset, corpus_folders, read_log, speaker_ids
from upcycle_se.data.speech import clear_synth_cache
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
