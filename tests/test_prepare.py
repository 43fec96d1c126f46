"""Data preparation: VoiceBank-DEMAND layouts, the 16 kHz cache, idempotence, manifests, bad inputs."""
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.data import prepare as P
from upcycle_se.data.pipeline import load_manifest, make_eval_dataset
from upcycle_se.errors import AudioError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
TRAIN_SPKS = ("p226", "p230", "p287", "p290")
TEST_SPKS = ("p232", "p257")
NAMINGS = {
    "28spk": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
    "plain": ("clean_trainset_wav", "noisy_trainset_wav"),
}


def make_vb(root: Path, *, sr: int = 16000, naming: str = "plain", train_spks=TRAIN_SPKS, test_spks=TEST_SPKS,
            n_utts: int = 2, seed: int = 0) -> Path:
    """A tiny VoiceBank-DEMAND-shaped corpus: noisy = clean + small noise; durations 0.2-0.4 s."""
    rng = np.random.default_rng(seed)
    clean_train, noisy_train = NAMINGS[naming]
    for clean_dir, noisy_dir, spks in ((clean_train, noisy_train, train_spks),
                                       ("clean_testset_wav", "noisy_testset_wav", test_spks)):
        (root / clean_dir).mkdir(parents=True, exist_ok=True)
        (root / noisy_dir).mkdir(parents=True, exist_ok=True)
        for spk in spks:
            for k in range(1, n_utts + 1):
                n = int(sr * rng.uniform(0.2, 0.4))
                t = np.arange(n) / sr
                clean = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 900) * t)
                noisy = clean + 0.01 * rng.standard_normal(n)
                sf.write(root / clean_dir / f"{spk}_{k:03d}.wav", clean, sr, subtype="PCM_16")
                sf.write(root / noisy_dir / f"{spk}_{k:03d}.wav", noisy, sr, subtype="PCM_16")
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict:
    """path -> (inode, mtime_ns, size) of every file below ``folder``."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def no_writes(*args, **kwargs):
    raise AssertionError("a prepared corpus must not be written again")


@pytest.fixture(scope="module")
def vb48(tmp_path_factory):
    """A 48 kHz corpus with the distributed names, prepared once."""
    root = make_vb(tmp_path_factory.mktemp("vb48") / "VoiceBank", sr=48000, naming="28spk")
    save = tmp_path_factory.mktemp("prep48")
    out = P.prepare_voicebank(root, save)
    return root, save, out


def test_48k_corpus_resampled_once_into_cache(vb48):
    root, save, out = vb48
    assert out == {name: save / f"{name}.json" for name in ("train", "valid", "test")}
    train, valid, test = (read_json(out[k]) for k in ("train", "valid", "test"))
    # p226 and p287 are VoiceBank's customary validation speakers; the test set is its own folders.
    assert sorted(train) == ["p230_001", "p230_002", "p290_001", "p290_002"]
    assert sorted(valid) == ["p226_001", "p226_002", "p287_001", "p287_002"]
    assert sorted(test) == ["p232_001", "p232_002", "p257_001", "p257_002"]
    assert {e["spk"] for e in valid.values()} == {"p226", "p287"}
    entry = train["p230_001"]
    assert set(entry) == {"noisy_wav", "clean_wav", "length", "spk"}
    assert entry["noisy_wav"] == "{save_folder}/wav16k/noisy_trainset_28spk_wav/p230_001.wav"
    assert entry["clean_wav"] == "{save_folder}/wav16k/clean_trainset_28spk_wav/p230_001.wav"
    assert test["p232_002"]["clean_wav"] == "{save_folder}/wav16k/clean_testset_wav/p232_002.wav"
    for manifest, split in ((train, "trainset_28spk"), (valid, "trainset_28spk"), (test, "testset")):
        for uid, e in manifest.items():
            src_frames = sf.info(str(root / f"noisy_{split}_wav" / f"{uid}.wav")).frames
            cached = Path(e["noisy_wav"].replace("{save_folder}", str(save)))
            info = sf.info(str(cached))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert info.frames == math.ceil(src_frames / 3)
            assert e["length"] == pytest.approx(info.frames / 16000, abs=1e-9)
    # The cached audio is the source, band-limited and decimated: a 200-900 Hz tone keeps its level.
    src, _ = sf.read(str(root / "clean_trainset_28spk_wav" / "p230_001.wav"))
    res, _ = sf.read(str(save / "wav16k" / "clean_trainset_28spk_wav" / "p230_001.wav"))
    np.testing.assert_allclose(res[20:-20], src[::3][20:len(res) - 20], atol=0.02)
    for sub in ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav", "clean_testset_wav", "noisy_testset_wav"):
        marker = read_json(save / "wav16k" / sub / ".resampled.json")
        assert marker["sample_rate"] == 16000
        assert len(marker["files"]) == (8 if "train" in sub else 4)
    assert not list(save.rglob("*.part"))
    opts = read_json(save / "prepare_options.json")
    assert opts["valid_speakers_used"] == ["p226", "p287"]
    assert opts["counts"] == {"train": 4, "valid": 4, "test": 4}


def test_second_run_writes_nothing(vb48, monkeypatch):
    root, save, out = vb48
    before = snapshot(save)
    monkeypatch.setattr(P, "write_audio_atomic", no_writes)
    monkeypatch.setattr(P, "_write_json_atomic", no_writes)
    assert P.prepare_voicebank(root, save) == out
    assert snapshot(save) == before


def test_changed_options_rewrite_manifests_but_reuse_cache(vb48, tmp_path, monkeypatch):
    root, save, _ = vb48
    wavs_before = {p: s for p, s in snapshot(save).items() if p.suffix == ".wav"}
    monkeypatch.setattr(P, "write_audio_atomic", no_writes)
    out = P.prepare_voicebank(root, save, valid_speakers=["p290"])
    assert sorted(read_json(out["valid"])) == ["p290_001", "p290_002"]
    assert sorted(read_json(out["train"])) == ["p226_001", "p226_002", "p230_001", "p230_002",
                                                "p287_001", "p287_002"]
    assert {p: s for p, s in snapshot(save).items() if p.suffix == ".wav"} == wavs_before
    monkeypatch.undo()
    P.prepare_voicebank(root, save)  # back to the module's default for the other tests
    assert sorted(read_json(out["valid"])) == ["p226_001", "p226_002", "p287_001", "p287_002"]


def test_interrupted_run_resumes_without_trusting_partial_files(tmp_path, monkeypatch):
    root = make_vb(tmp_path / "vb", sr=48000, naming="28spk", train_spks=("p226", "p230", "p287"),
                   test_spks=("p232",), n_utts=2)
    save = tmp_path / "prep"
    real_write = P.write_audio_atomic
    written = []

    def killed_after_three(path, sig, sr, **kw):
        if len(written) == 3:
            # What a kill -9 during a write leaves: the temporary file, never the final name.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            (Path(path).parent / f".{Path(path).stem}.abc123.part").write_bytes(b"RIFF\x00half a file")
            raise KeyboardInterrupt
        real_write(path, sig, sr, **kw)
        written.append(Path(path))

    monkeypatch.setattr(P, "write_audio_atomic", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        P.prepare_voicebank(root, save)
    assert len(written) == 3 and len(list(save.rglob("*.part"))) == 1
    assert not (save / "train.json").exists() and not (save / "prepare_options.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in written}

    rewritten = []

    def counting(path, sig, sr, **kw):
        rewritten.append(Path(path))
        real_write(path, sig, sr, **kw)

    monkeypatch.setattr(P, "write_audio_atomic", counting)
    out = P.prepare_voicebank(root, save)
    assert not list(save.rglob("*.part"))
    assert {p: p.stat().st_mtime_ns for p in written} == kept  # complete files from the killed run are kept
    assert len(rewritten) == 16 - 3 and not set(rewritten) & set(written)
    for name in ("train", "valid", "test"):
        for e in load_manifest(out[name]).values():
            assert sf.info(e["noisy_wav"]).samplerate == 16000 and sf.info(e["clean_wav"]).frames > 0


def test_16k_corpus_used_in_place(tmp_path):
    root = make_vb(tmp_path / "vb16", sr=16000, naming="plain")
    save = tmp_path / "prep"
    out = P.prepare_voicebank(root, save)
    train = read_json(out["train"])
    assert train["p290_002"]["noisy_wav"] == "{data_root}/noisy_trainset_wav/p290_002.wav"
    assert train["p290_002"]["clean_wav"] == "{data_root}/clean_trainset_wav/p290_002.wav"
    frames = sf.info(str(root / "noisy_trainset_wav" / "p290_002.wav")).frames
    assert train["p290_002"]["length"] == frames / 16000 and train["p290_002"]["spk"] == "p290"
    assert read_json(out["test"])["p257_001"]["noisy_wav"] == "{data_root}/noisy_testset_wav/p257_001.wav"
    assert not (save / "wav16k").exists()  # nothing copied
    # data_root is recorded, so the manifest resolves without being told where the corpus is.
    assert load_manifest(out["valid"])["p226_001"]["clean_wav"] == str(root / "clean_trainset_wav" / "p226_001.wav")


def test_default_validation_speakers_without_p226_p287(tmp_path):
    root = make_vb(tmp_path / "vb", train_spks=("p240", "p231", "p250", "p245"), test_spks=("p232",), n_utts=1)
    out = P.prepare_voicebank(root, tmp_path / "prep")
    assert sorted(read_json(out["valid"])) == ["p245_001", "p250_001"]
    assert sorted(read_json(out["train"])) == ["p231_001", "p240_001"]


def test_paths_with_spaces_unicode_and_braces(tmp_path):
    root = make_vb(tmp_path / "my dätä {v1}" / "Voice Bank", sr=48000, naming="28spk", train_spks=("p226", "p230",
                   "p287"), test_spks=("p232",), n_utts=1)
    save = tmp_path / "prép out {x}"
    out = P.prepare_voicebank(root, save)
    assert read_json(out["train"])["p230_001"]["noisy_wav"].startswith("{save_folder}/wav16k/")
    test = make_eval_dataset(out["test"], root)
    item = test[0]
    assert item["id"] == "p232_001" and item["noisy_sig"].shape == item["clean_sig"].shape
    assert item["noisy_sig"].shape[0] == round(read_json(out["test"])["p232_001"]["length"] * 16000)
    # Files used in place, under a folder and with a name that contain braces (placeholder syntax).
    root16 = make_vb(tmp_path / "{data_root} ünï" / "vb", sr=16000, train_spks=("p226", "p230", "p287"),
                     test_spks=("p232",), n_utts=1)
    for side in ("clean", "noisy"):
        sf.write(root16 / f"{side}_trainset_wav" / "p230_{9}.wav", np.full(800, 0.25), 16000)
    out16 = P.prepare_voicebank(root16, tmp_path / "prep16")
    assert read_json(out16["train"])["p230_{9}"]["clean_wav"] == "{data_root}/clean_trainset_wav/p230_{{9}}.wav"
    entry = load_manifest(out16["train"])["p230_{9}"]
    assert entry["clean_wav"] == str(root16 / "clean_trainset_wav" / "p230_{9}.wav")
    sig, _ = sf.read(entry["noisy_wav"])
    assert len(sig) == 800


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: data folder not found"):
        P.prepare_voicebank(tmp_path / "nowhere", tmp_path / "prep")


def test_missing_subfolders_are_named_with_accepted_namings(tmp_path):
    root = make_vb(tmp_path / "vb", n_utts=1)
    for sub in ("noisy_trainset_wav", "clean_testset_wav"):
        for f in (root / sub).iterdir():
            f.unlink()
        (root / sub).rmdir()
    with pytest.raises(DataError) as err:
        P.prepare_voicebank(root, tmp_path / "prep")
    msg = str(err.value)
    assert "missing sub-folder(s) noisy_trainset_28spk_wav or noisy_trainset_wav; clean_testset_wav (accepted" in msg
    assert "clean_trainset_28spk_wav or clean_trainset_wav" in msg  # the accepted names are all listed
    assert "\n" not in msg


def test_paired_name_mismatch_lists_names(tmp_path):
    root = make_vb(tmp_path / "vb", n_utts=2)
    os.rename(root / "noisy_trainset_wav" / "p230_002.wav", root / "noisy_trainset_wav" / "p230_009.wav")
    with pytest.raises(DataError, match=r"1 clean file\(s\) without a noisy one \(e.g. p230_002\); "
                                        r"1 noisy file\(s\) without a clean one \(e.g. p230_009\)"):
        P.prepare_voicebank(root, tmp_path / "prep")


def _write_bad(path: Path, kind: str) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF" + np.random.default_rng(0).bytes(300))
    elif kind == "stereo":
        sf.write(path, np.zeros((800, 2)), 16000)
    elif kind == "zero_length":
        sf.write(path, np.zeros(0), 16000)


@pytest.mark.parametrize("kind, problem", [
    ("empty", "empty file (0 bytes)"),
    ("corrupt", "cannot be read as audio"),
    ("stereo", "has 2 channels, expected mono"),
    ("zero_length", "empty audio (0 samples)"),
])
def test_unusable_file_is_named_with_its_problem(tmp_path, kind, problem):
    root = make_vb(tmp_path / "vb", sr=48000, n_utts=1)
    bad = root / "noisy_trainset_wav" / "p230_001.wav"
    _write_bad(bad, kind)
    with pytest.raises(AudioError) as err:
        P.prepare_voicebank(root, tmp_path / "prep")
    assert str(err.value).startswith(f"{bad}: {problem}")
    assert not (tmp_path / "prep" / "wav16k").exists()  # checked before any resampling


def test_several_unusable_files_reported_together(tmp_path):
    root = make_vb(tmp_path / "vb", n_utts=1)
    _write_bad(root / "clean_trainset_wav" / "p226_001.wav", "stereo")
    _write_bad(root / "noisy_testset_wav" / "p232_001.wav", "empty")
    with pytest.raises(AudioError, match=r"p226_001.wav: has 2 channels.*and 1 more unusable file\(s\): "
                                         r".*p232_001.wav: empty file"):
        P.prepare_voicebank(root, tmp_path / "prep")


def test_short_files_are_allowed(tmp_path):
    root = make_vb(tmp_path / "vb", n_utts=1)
    for side in ("clean", "noisy"):
        sf.write(root / f"{side}_trainset_wav" / "p230_001.wav", np.full(50, 0.1), 16000)
    out = P.prepare_voicebank(root, tmp_path / "prep")
    assert read_json(out["train"])["p230_001"]["length"] == 50 / 16000


def test_pair_duration_mismatch(tmp_path):
    root = make_vb(tmp_path / "vb", sr=48000, n_utts=1)
    sf.write(root / "noisy_trainset_wav" / "p230_001.wav", np.zeros(48000), 48000)
    with pytest.raises(DataError, match=r"1 clean/noisy pair\(s\) differ in duration by more than 0.1 s, "
                                        r"e.g. p230_001 \(0.\d\d s clean vs 1.00 s noisy\)"):
        P.prepare_voicebank(root, tmp_path / "prep")
    assert not (tmp_path / "prep" / "wav16k").exists()  # found before any resampling


def test_bad_options(tmp_path):
    root = make_vb(tmp_path / "vb", n_utts=1)
    with pytest.raises(DataError, match=r"validation speaker\(s\) p999 not among the training speakers"):
        P.prepare_voicebank(root, tmp_path / "prep", valid_speakers=["p999"])
    with pytest.raises(DataError, match="leaves none to train on"):
        P.prepare_voicebank(root, tmp_path / "prep", valid_speakers=list(TRAIN_SPKS))
    with pytest.raises(ConfigError, match="choose one of"):
        P.prepare_folders(root / "clean_trainset_wav", root / "noisy_trainset_wav", tmp_path / "p", paired=True,
                          valid_speakers=["p226"], valid_fraction=0.5)
    with pytest.raises(ConfigError, match="both test_clean_dir and test_noisy_dir"):
        P.prepare_folders(root / "clean_trainset_wav", root / "noisy_trainset_wav", tmp_path / "p", paired=True,
                          test_clean_dir=root / "clean_testset_wav")
    with pytest.raises(DataError, match=r"nope: noisy training folder not found"):
        P.prepare_folders(root / "clean_trainset_wav", root / "nope", tmp_path / "p", paired=True)
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no audio files .* in the noisy training folder"):
        P.prepare_folders(root / "clean_trainset_wav", root / "empty", tmp_path / "p", paired=False)


def test_prepare_folders_unpaired_flac_22k_any_layout(tmp_path):
    """Another corpus: flat clean folder, nested noisy folder, flac at 22.05 kHz, unrelated names."""
    rng = np.random.default_rng(1)
    data = tmp_path / "own corpus"
    (data / "clean").mkdir(parents=True)
    for spk in ("anna", "bob", "cara", "dan"):
        for k in range(2):
            sf.write(data / "clean" / f"{spk}_{k}.flac", 0.1 * rng.standard_normal(4410 + 441 * k), 22050)
    for spk in ("bob", "cara", "dan", "eve"):
        (data / "noisy" / spk / "session1").mkdir(parents=True)
        sf.write(data / "noisy" / spk / "session1" / "take.flac", 0.1 * rng.standard_normal(6615), 22050)
    for side in ("clean", "noisy"):
        (data / "test" / side).mkdir(parents=True)
        sf.write(data / "test" / side / "t1.flac", 0.1 * rng.standard_normal(2205), 22050)
    save = tmp_path / "prep"
    out = P.prepare_folders(data / "clean", data / "noisy", save, paired=False, test_clean_dir=data / "test" / "clean",
                            test_noisy_dir=data / "test" / "noisy", valid_speakers=["eve"])
    train, valid, test = (read_json(out[k]) for k in ("train", "valid", "test"))
    assert sorted(train) == ["clean/anna_0", "clean/anna_1", "clean/bob_0", "clean/bob_1", "clean/cara_0",
                             "clean/cara_1", "clean/dan_0", "clean/dan_1", "noisy/bob/session1/take",
                             "noisy/cara/session1/take", "noisy/dan/session1/take"]
    assert train["clean/anna_1"] == {"clean_wav": "{save_folder}/wav16k/clean/anna_1.wav",
                                     "length": math.ceil(4851 * 16000 / 22050) / 16000, "spk": "anna"}
    assert train["noisy/dan/session1/take"] == {"noisy_wav": "{save_folder}/wav16k/noisy/dan/session1/take.wav",
                                                "length": 4800 / 16000, "spk": "dan"}
    # Unrelated clean recordings are no reference: the held-out validation files are noisy only.
    assert valid == {"eve/session1/take": {"noisy_wav": "{save_folder}/wav16k/noisy/eve/session1/take.wav",
                                           "length": 0.3, "spk": "eve"}}
    assert test == {"t1": {"noisy_wav": "{save_folder}/wav16k/test/noisy/t1.wav",
                           "clean_wav": "{save_folder}/wav16k/test/clean/t1.wav", "length": 0.1, "spk": "t1"}}
    assert read_json(save / "prepare_options.json")["options"]["data_root"] == str(data)
    for e in load_manifest(out["train"]).values():
        assert sf.info(e.get("noisy_wav") or e["clean_wav"]).samplerate == 16000
    # Without test folders no test.json, and a stale one from the run above is removed.
    out2 = P.prepare_folders(data / "clean", data / "noisy", save, paired=False, valid_fraction=0.2)
    assert out2["test"] is None and not (save / "test.json").exists()
    assert {e["spk"] for e in read_json(out2["valid"]).values()} == {"eve"}


def test_prepare_folders_unpaired_holds_out_noisy_files(tmp_path):
    """Unpaired validation is noisy files only: the held-out speakers come from the noisy folder even when
    clean-only speakers sort last; with file_as_speaker one nested folder of noisy files still gives files
    to hold out (the UnpairedFolders recipe's setting)."""
    rng = np.random.default_rng(2)
    data = tmp_path / "own"
    for rel in ("clean/zed_1.wav", "clean/zoe_1.wav", "noisy/x_1.wav", "noisy/y_1.wav",
                "nested/site/a.wav", "nested/site/b.wav", "nested/site/c.wav"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data / rel, 0.1 * rng.standard_normal(3200), 16000)
    out = P.prepare_folders(data / "clean", data / "noisy", tmp_path / "p1", paired=False)
    assert sorted(read_json(out["valid"])) == ["y_1"]
    assert sorted(read_json(out["train"])) == ["clean/zed_1", "clean/zoe_1", "noisy/x_1"]

    out = P.prepare_folders(data / "clean", data / "nested", tmp_path / "p2", paired=False, valid_fraction=0.34,
                            speaker_fn=P.file_as_speaker)
    assert sorted(read_json(out["valid"])) == ["site/c"]
    assert sorted(read_json(out["train"])) == ["clean/zed_1", "clean/zoe_1", "noisy/site/a", "noisy/site/b"]
    with pytest.raises(DataError, match="only 1 training speaker"):  # the default speakers: one folder, "site"
        P.prepare_folders(data / "clean", data / "nested", tmp_path / "p3", paired=False, valid_fraction=0.34)


def test_recipe_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("voicebank_prepare",
                                                  REPO / "recipes" / "VoiceBankDEMAND" / "voicebank_prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.prepare_voicebank is P.prepare_voicebank
    root = make_vb(tmp_path / "vb", n_utts=1)
    assert mod.main([str(root), str(tmp_path / "prep"), "--valid-speakers", "p290"]) == 0
    assert sorted(read_json(tmp_path / "prep" / "valid.json")) == ["p290_001"]
    assert mod.main([str(tmp_path / "missing"), str(tmp_path / "prep")]) == 2
    assert "missing: data folder not found" in capsys.readouterr().err


def test_two_speaker_corpus_keeps_one_for_training(tmp_path):
    root = make_vb(tmp_path / "vb", train_spks=("p226", "p227"), test_spks=("p232",), n_utts=1)
    out = P.prepare_voicebank(root, tmp_path / "prep")
    assert list(read_json(out["train"])) == ["p226_001"] and list(read_json(out["valid"])) == ["p227_001"]


def test_corpus_builder_layouts(tiny_corpus, tiny_corpus_48k, tmp_path):
    """The project's synthetic corpora (16 kHz "vb" names, 48 kHz distributed names) prepare and load."""
    for corpus, cached in ((tiny_corpus, False), (tiny_corpus_48k, True)):
        out = P.prepare_voicebank(corpus, tmp_path / corpus.name)
        train, test = read_json(out["train"]), read_json(out["test"])
        assert train and read_json(out["valid"]) and test
        assert not {e["spk"] for e in train.values()} & {e["spk"] for e in read_json(out["valid"]).values()}
        prefix = "{save_folder}/wav16k/" if cached else "{data_root}/"
        assert all(e["noisy_wav"].startswith(prefix) for m in (train, test) for e in m.values())
        uid, entry = next(iter(test.items()))
        item = make_eval_dataset(out["test"], corpus)[0]
        assert item["id"] == uid and item["clean_sig"].shape[0] == round(entry["length"] * 16000)
