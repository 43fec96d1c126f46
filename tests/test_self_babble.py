"""Same-voice babble in the training corpus (`build-corpus --self-babble N`): which files change, how, and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.cli import main as cli_main
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import read_log
from upcycle_se.corpus.self_babble import SELF_BABBLE_NOISE, self_babble_mixtures
from upcycle_se.errors import UserError

SR = 16000


def _voice(seed: int, f0: float, n: int = SR) -> np.ndarray:
    """A voiced-like test clip [time]: harmonics of f0 under a syllable envelope, -26 dBFS-ish."""
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    return (0.05 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)).astype(np.float32)


def test_mixtures_every_nth_at_the_snr_from_the_speakers_other_clips():
    clips = {f"p226_{i:03d}": _voice(i, 110 + 10 * i) for i in range(1, 6)}
    snrs = {u: 5.0 * i for i, u in enumerate(sorted(clips))}
    out = self_babble_mixtures(clips, snrs, SR, every=2, seed=0, speaker_index=3)
    assert sorted(out) == ["p226_001", "p226_003", "p226_005"]  # sorted ids, from the first
    for uid, noisy in out.items():
        assert noisy.shape == clips[uid].shape and noisy.dtype == np.float32
        assert abs(N.measure_snr(clips[uid], noisy, SR) - snrs[uid]) < 0.1, uid
    again = self_babble_mixtures(clips, snrs, SR, every=2, seed=0, speaker_index=3)
    other = self_babble_mixtures(clips, snrs, SR, every=2, seed=0, speaker_index=4)
    assert all(np.array_equal(out[u], again[u]) for u in out)  # deterministic in its key
    assert not np.allclose(out["p226_001"], other["p226_001"])


def test_the_target_clip_is_never_in_its_own_babble():
    """Each clip a tone of its own: the target's babble holds the other clips' tones (warped by at most
    0.8-1.25x) and none of the target's."""
    t = np.arange(2 * SR) / SR
    tones = {"a_001": 2000.0, "a_002": 300.0, "a_003": 500.0}
    clips = {u: (0.05 * np.sin(2 * np.pi * f * t)).astype(np.float32) for u, f in tones.items()}
    noisy = self_babble_mixtures(clips, {u: 0.0 for u in clips}, SR, every=3)["a_001"]
    residual = noisy - clips["a_001"]
    power = np.abs(np.fft.rfft(residual)) ** 2
    freqs = np.fft.rfftfreq(len(residual), 1 / SR)
    others = power[(freqs > 200) & (freqs < 700)].sum()
    own = power[(freqs > 1500) & (freqs < 2600)].sum()
    assert own < 0.01 * others, (own, others)


@pytest.mark.parametrize("kwargs, match", [
    (dict(every=0), "every must be at least 1"),
    (dict(every=2, one=True), "at least 2 utterances"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    clips = {"a_001": _voice(1, 120)} if kwargs.pop("one", False) else {"a_001": _voice(1, 120), "a_002": _voice(2, 160)}
    with pytest.raises(UserError, match=match):
        self_babble_mixtures(clips, {u: 0.0 for u in clips}, SR, **kwargs)


def test_build_corpus_self_babble_changes_only_every_second_training_mixture(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "sb"
    assert cli_main(["build-corpus", str(out), "--preset", "tiny", "--self-babble", "2", "--no-progress"]) == 0
    assert "reused" not in capsys.readouterr().out
    info = json.loads((out / "corpus_info.json").read_text())
    base = json.loads((tiny_corpus / "corpus_info.json").read_text())
    assert info["config"] == {**base["config"], "self_babble_every": 2}
    assert info["noises"]["train"] == base["noises"]["train"] + [SELF_BABBLE_NOISE]
    log, base_log = read_log(out / info["logs"]["train"]), read_log(tiny_corpus / base["logs"]["train"])
    assert sorted(log) == sorted(base_log)
    changed = []
    for uid in sorted(log):
        for kind in ("clean", "noisy"):
            ours = (out / info["folders"][f"{kind}_train"] / f"{uid}.wav").read_bytes()
            theirs = (tiny_corpus / base["folders"][f"{kind}_train"] / f"{uid}.wav").read_bytes()
            if kind == "clean":
                assert ours == theirs, uid  # the clean files are never touched
            elif ours != theirs:
                changed.append(uid)
        assert log[uid][1] == base_log[uid][1]  # the SNR stays the file's
        if log[uid][0] == SELF_BABBLE_NOISE:
            clean, _ = sf.read(str(out / info["folders"]["clean_train"] / f"{uid}.wav"))
            noisy, _ = sf.read(str(out / info["folders"]["noisy_train"] / f"{uid}.wav"))
            assert abs(N.measure_snr(clean, noisy, SR) - log[uid][1]) < 0.5, uid
    # 4 speakers x 5 files: files 001, 003 and 005 of each speaker
    assert changed == sorted(u for u in log if int(u.split("_")[1]) % 2 == 1)
    assert changed == sorted(u for u, (noise, _) in log.items() if noise == SELF_BABBLE_NOISE)
    for kind in ("clean", "noisy"):  # the test side is the plain build's, file for file
        for path in sorted((tiny_corpus / base["folders"][f"{kind}_test"]).glob("*.wav")):
            assert (out / info["folders"][f"{kind}_test"] / path.name).read_bytes() == path.read_bytes()
    assert cli_main(["build-corpus", str(out), "--preset", "tiny", "--self-babble", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("reused")


def test_self_babble_add_keeps_every_file_and_adds_the_benchmarks_babble_twins(tiny_corpus, tmp_path, capsys):
    """``--self-babble 2 --self-babble-add`` gives, file for file, the corpus ``benchmarks/speech_keep.py`` derives
    for the packaged default (``selfbabble_add``): every plain file, plus a same-voice babble twin ``<id>x``."""
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import speech_keep as sk

    out = tmp_path / "sba"
    assert cli_main(["build-corpus", str(out), "--preset", "tiny", "--self-babble", "2", "--self-babble-add",
                     "--no-progress"]) == 0
    assert "32 files" in capsys.readouterr().out  # 20 + a twin of files 001, 003, 005 of 4 speakers
    info = json.loads((out / "corpus_info.json").read_text())
    base = json.loads((tiny_corpus / "corpus_info.json").read_text())
    assert info["config"] == {**base["config"], "self_babble_every": 2, "self_babble_add": True}
    shutil.copytree(tiny_corpus, tmp_path / "work" / "corpus")
    derived = sk.build_self_babble_corpus(tmp_path / "work", log=lambda m: None, every=2, extra=True)
    log, theirs = read_log(out / info["logs"]["train"]), read_log(derived / "logfiles" / "log_trainset.txt")
    assert log == theirs and sum(u.endswith("x") for u in log) == 12
    for uid in log:
        for kind in ("clean", "noisy"):
            assert (out / info["folders"][f"{kind}_train"] / f"{uid}.wav").read_bytes() == \
                (derived / f"{kind}_trainset_wav" / f"{uid}.wav").read_bytes(), (uid, kind)
    twin = out / info["folders"]["txt_train"] / "p226_001x.txt"
    assert twin.read_text() == (out / info["folders"]["txt_train"] / "p226_001.txt").read_text()


@pytest.mark.parametrize("argv, match", [
    (["--preset", "tiny", "--self-babble-add"], "self_babble_add needs self_babble_every"),
    (["--preset", "tiny", "--self-babble", "-1"], "self_babble_every must be 0"),
    (["--preset", "tiny", "--utts", "1", "--self-babble", "2"], "at least 2 utterances"),
    (["--preset", "realvoice", "--self-babble", "2"], "not to a real-voice test set"),
])
def test_cli_refuses_bad_self_babble(tmp_path, capsys, argv, match):
    assert cli_main(["build-corpus", str(tmp_path / "c"), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
    assert not (tmp_path / "c" / "clean_trainset_wav").exists()
