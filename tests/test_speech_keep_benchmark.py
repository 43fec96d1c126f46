"""benchmarks/speech_keep.py: the arms' commands and the choice rule (validation only) on hand-made scores."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import speech_keep as sk  # noqa: E402


def _sets():
    valid = {f"v{i}": {"family": "broad", "snr": "5.0"} for i in range(10)}
    babble = {f"b{i}": {"family": "babble_many", "snr": "0.0" if i < 5 else "5.0"} for i in range(10)}
    return {"valid": valid, "valid_babble": babble}


def _rows(gains):
    """``gains``: arm -> (PESQ shift on valid, STOI shift on valid_babble); default PESQ 1.6 / STOI 0.80,
    with per-file spread so the CIs are finite."""
    sets = _sets()
    rows = {"valid": {}, "valid_babble": {}}
    for system, (dp, ds) in {"default": (0.0, 0.0), **gains}.items():
        rows["valid"][system] = {f: {"pesq": 1.6 + 0.01 * i + dp, "stoi": 0.9}
                                 for i, f in enumerate(sets["valid"])}
        rows["valid_babble"][system] = {f: {"pesq": 1.3, "stoi": 0.80 + 0.01 * i + ds + (0.002 * i if ds else 0)}
                                        for i, f in enumerate(sets["valid_babble"])}
    return rows


def test_choice_takes_the_largest_significant_stoi_gain_that_keeps_pesq():
    gains = {"control": (0.0, 0.0), "long": (-0.01, 0.02), "sisdr": (-0.05, 0.04), "babble": (0.02, 0.01)}
    summary = sk.summarize(_rows(gains), _sets(), list(gains))
    # sisdr gains most STOI but loses 0.05 PESQ on valid (> 0.02): out; long beats babble
    assert summary["chosen"] == "long"
    d = summary["valid_babble"]["vs_default"]["long"]["stoi"]
    assert abs(d["mean"] - (0.02 + 0.002 * 4.5)) < 1e-9 and d["ci"] > 0
    assert set(summary["valid_babble"]["by_snr"]) == {"0.0", "5.0"}
    assert "control" not in summary["valid"]["vs_control"]


def test_no_arm_is_chosen_without_a_significant_gain():
    gains = {"control": (0.0, 0.0), "sisdr": (0.0, 0.0)}
    assert sk.summarize(_rows(gains), _sets(), list(gains))["chosen"] is None


def test_arms_differ_from_the_control_in_one_lever_only(tmp_path):
    base = set(sk.train_command("control", tmp_path, bf16=True))
    assert set(sk.train_command("sisdr", tmp_path, True)) ^ base == {
        "--sisdr_weight=0.01", f"--output_folder={tmp_path / 'runs' / 'sisdr'}",
        f"--output_folder={tmp_path / 'runs' / 'control'}"}
    # the long run trains round 2's choice on from its exported model, with its data and its loss
    long = sk.train_command("long", tmp_path, True)
    assert f"--init_from={tmp_path / 'models' / 'selfbabble_sisdr'}" in long and "--sisdr_weight=0.01" in long
    assert f"--data_folder={tmp_path / 'selfbabble' / 'corpus'}" in long
    babble = set(sk.train_command("babble", tmp_path, True)) ^ base
    assert f"--data_folder={tmp_path / 'babble' / 'corpus'}" in babble
    assert f"--init_from={sk.START}" in base and "--precision=bf16" in base
    assert "--precision=bf16" not in sk.train_command("control", tmp_path, bf16=False)


def _fake_valid_babble(work: Path) -> None:
    """``work/valid_babble`` with 2 speakers x 3 clean files (voiced-like tone trains) and their log."""
    import numpy as np
    import soundfile as sf

    root = work / "valid_babble"
    (root / "clean_testset_wav").mkdir(parents=True)
    (root / "logfiles").mkdir()
    lines = []
    for s, spk in enumerate(("p232", "p257")):
        for u in range(3):
            t = np.arange(16000 + 2000 * u) / 16000
            f0 = 110 + 60 * s + 15 * u
            sig = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 4 * t) > -0.3)
            sf.write(root / "clean_testset_wav" / f"{spk}_00{u + 1}.wav", 0.1 * sig, 16000)
            lines.append(f"{spk}_00{u + 1} babble_many {2.5 * u}")
    (root / "logfiles" / "log_testset.txt").write_text("\n".join(lines) + "\n")


def test_self_babble_set_mixes_each_file_with_its_own_speakers_other_files(tmp_path):
    """The diagnostic set: every clean file of valid_babble in babble of the same speaker's other files, at its
    SNR there; deterministic; reused once complete."""
    import numpy as np
    import soundfile as sf

    from upcycle_se.corpus.noise import active_speech_power

    _fake_valid_babble(tmp_path)
    out = sk.build_self_babble(tmp_path, seed=0)
    log = (out / "logfiles" / "log_testset.txt").read_text().split()
    assert log[:3] == ["p232_001", "self_babble", "0.0"] and len(log) == 18
    for uid, snr in (("p232_002", 2.5), ("p257_003", 5.0)):
        clean, _ = sf.read(out / "clean_testset_wav" / f"{uid}.wav")
        noisy, _ = sf.read(out / "noisy_testset_wav" / f"{uid}.wav")
        measured = 10 * np.log10(active_speech_power(clean, 16000) / np.mean((noisy - clean) ** 2))
        assert abs(measured - snr) < 0.3, (uid, measured)
    # the same seed in another work folder: the same audio
    other = tmp_path / "again"
    _fake_valid_babble(other)
    a = (out / "noisy_testset_wav" / "p257_001.wav").read_bytes()
    assert (sk.build_self_babble(other, seed=0) / "noisy_testset_wav" / "p257_001.wav").read_bytes() == a
    mtime = (out / "noisy_testset_wav" / "p257_001.wav").stat().st_mtime_ns
    sk.build_self_babble(tmp_path, seed=0)  # complete: reused, not rewritten
    assert (out / "noisy_testset_wav" / "p257_001.wav").stat().st_mtime_ns == mtime


def test_self_babble_training_corpus_changes_every_second_file_and_never_the_source(tmp_path):
    """The selfbabble arm's corpus: per speaker, files 0, 2, ... get same-voice babble at their logged SNR, the
    others (and every clean file) are hard links of the main corpus, which stays byte for byte as it was."""
    import json

    import numpy as np
    import soundfile as sf

    from upcycle_se.corpus.noise import active_speech_power

    src = tmp_path / "corpus"
    for sub in ("clean_trainset_wav", "noisy_trainset_wav", "logfiles"):
        (src / sub).mkdir(parents=True)
    lines, rng = [], np.random.default_rng(0)
    for s, spk in enumerate(("p225", "p226")):
        for u in range(4):
            t = np.arange(12000 + 1000 * u) / 16000
            f0 = 100 + 50 * s + 10 * u
            clean = 0.1 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 3 * t) > 0)
            uid = f"{spk}_00{u + 1}"
            sf.write(src / "clean_trainset_wav" / f"{uid}.wav", clean, 16000)
            sf.write(src / "noisy_trainset_wav" / f"{uid}.wav", clean + 0.01 * rng.standard_normal(t.size), 16000)
            lines.append(f"{uid} broad {5.0 * u}")
    (src / "logfiles" / "log_trainset.txt").write_text("\n".join(lines) + "\n")
    (src / "corpus_info.json").write_text(json.dumps({"config": {"seed": 0}}))
    before = {p.name: p.read_bytes() for p in (src / "noisy_trainset_wav").iterdir()}

    out = sk.build_self_babble_corpus(tmp_path, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in (src / "noisy_trainset_wav").iterdir()} == before
    lines = (out / "logfiles" / "log_trainset.txt").read_text().splitlines()
    log = dict((ln.split()[0], ln.split()[1:]) for ln in lines)
    assert [uid for uid, (noise, _) in sorted(log.items()) if noise == "self_babble"] == \
        ["p225_001", "p225_003", "p226_001", "p226_003"]
    for uid in ("p225_002", "p226_004"):  # untouched: the same file, linked
        assert (out / "noisy_trainset_wav" / f"{uid}.wav").samefile(src / "noisy_trainset_wav" / f"{uid}.wav")
    clean, _ = sf.read(out / "clean_trainset_wav" / "p226_003.wav")
    noisy, _ = sf.read(out / "noisy_trainset_wav" / "p226_003.wav")
    measured = 10 * np.log10(active_speech_power(clean, 16000) / np.mean((noisy - clean) ** 2))
    assert abs(measured - 10.0) < 0.3, measured
    assert "derived" in json.loads((out / "corpus_info.json").read_text())

    # a quarter share: only each speaker's first of its four files, in its own folder; the source still untouched
    quarter = sk.build_self_babble_corpus(tmp_path, log=lambda m: None, every=4)
    assert quarter == tmp_path / "selfbabble4" / "corpus"
    lines = (quarter / "logfiles" / "log_trainset.txt").read_text().splitlines()
    log = dict((ln.split()[0], ln.split()[1]) for ln in lines)
    assert [uid for uid, noise in sorted(log.items()) if noise == "self_babble"] == ["p225_001", "p226_001"]
    assert (quarter / "noisy_trainset_wav" / "p225_003.wav").samefile(src / "noisy_trainset_wav" / "p225_003.wav")
    assert {p.name: p.read_bytes() for p in (src / "noisy_trainset_wav").iterdir()} == before


def _round2_summary(arms):
    """A hand-made summary for round 2's rule: ``arms``: arm -> (PESQ on valid, {set: (STOI mean, CI) vs
    control}); the control's PESQ on valid is 1.80."""
    s = {"arms": ["control", *arms], "valid": {"control": {"pesq": {"mean": 1.80, "ci": 0.05}}}}
    for name in ("valid", "valid_babble", sk.SELF_BABBLE):
        s.setdefault(name, {}).setdefault("vs_control", {})
    for arm, (pesq, stoi) in arms.items():
        s["valid"][arm] = {"pesq": {"mean": pesq, "ci": 0.05}}
        for name in ("valid", "valid_babble", sk.SELF_BABBLE):
            mean, ci = stoi.get(name, (0.0, 0.003))
            s[name]["vs_control"][arm] = {"stoi": {"mean": mean, "ci": ci}}
    return s


def test_round_two_replaces_the_control_only_for_a_same_voice_gain_that_keeps_the_rest():
    arms = {
        # the largest gains, but PESQ on valid 0.03 below the control's: out
        "pesq_drop": (1.77, {sk.SELF_BABBLE: (0.05, 0.005), "valid_babble": (0.04, 0.005)}),
        # same-voice gain but STOI on valid significantly down: out
        "valid_drop": (1.80, {sk.SELF_BABBLE: (0.04, 0.005), "valid": (-0.01, 0.004)}),
        # same-voice gain not significant: out
        "noisy_gain": (1.85, {sk.SELF_BABBLE: (0.004, 0.005), "valid_babble": (0.03, 0.005)}),
        "small": (1.79, {sk.SELF_BABBLE: (0.010, 0.004), "valid_babble": (0.000, 0.004)}),
        "big": (1.785, {sk.SELF_BABBLE: (0.020, 0.004), "valid_babble": (-0.002, 0.003)}),
    }
    assert sk.choose_same_voice(_round2_summary(arms)) == "big"
    del arms["big"]
    assert sk.choose_same_voice(_round2_summary(arms)) == "small"
    del arms["small"]
    assert sk.choose_same_voice(_round2_summary(arms)) is None
    # without the control among the arms there is nothing to replace
    s = _round2_summary({"small": (1.79, {sk.SELF_BABBLE: (0.01, 0.004)})})
    s["arms"].remove("control")
    assert sk.choose_same_voice(s) is None


def test_round_two_arms_differ_from_selfbabble_in_one_lever(tmp_path):
    base = set(sk.train_command("selfbabble", tmp_path, True))
    assert set(sk.train_command("selfbabble_sisdr", tmp_path, True)) ^ base == {
        "--sisdr_weight=0.01", f"--output_folder={tmp_path / 'runs' / 'selfbabble'}",
        f"--output_folder={tmp_path / 'runs' / 'selfbabble_sisdr'}"}
    quarter = set(sk.train_command("selfbabble4", tmp_path, True)) ^ base
    assert f"--data_folder={tmp_path / 'selfbabble4' / 'corpus'}" in quarter
    assert not any(o.startswith("--sisdr") for o in quarter)


def test_unpaired_round_trains_the_packaged_unpaired_on_and_differs_in_the_data_only(tmp_path):
    control = sk.train_command("unpaired_control", tmp_path, True)
    for option in ("--unpaired=shuffle", "--loss_type=gan", f"--init_from={sk.UNPAIRED}", "--remix_weight=40",
                   "--remix_noise=pauses", "--ema_decay=0.998", "--n_epochs=2", "--n_epochs_decay=1", "--lr=0.0005",
                   "--spectral_compress=1.0"):
        assert option in control, option
    assert not any(o.startswith("--init_from") and o != f"--init_from={sk.UNPAIRED}" for o in control)
    assert (sk.UNPAIRED / "generator.ckpt").is_file()
    diff = set(sk.train_command("unpaired_selfbabble", tmp_path, True)) ^ set(control)
    assert {o.split("=")[0] for o in diff} == {"--data_folder", "--prep_folder", "--output_folder"}
    assert f"--data_folder={tmp_path / 'selfbabble' / 'corpus'}" in diff


def test_unpaired_round_compares_with_its_own_control_and_keeps_the_packaged_pesq():
    gain = {sk.SELF_BABBLE: (0.02, 0.004)}
    s = _round2_summary({"unpaired_selfbabble": (1.70, gain)})
    s["arms"][0] = "unpaired_control"
    for name in ("valid", "valid_babble", sk.SELF_BABBLE):
        s[name]["vs_unpaired_control"] = s[name].pop("vs_control")
    s["valid"]["unpaired_control"] = s["valid"].pop("control")
    s["valid"]["unpaired_control"]["pesq"]["mean"] = 1.70
    s["valid"]["unpaired"] = {"pesq": {"mean": 1.71, "ci": 0.05}}
    assert sk.choose_unpaired(s) == "unpaired_selfbabble"
    # 0.03 below the packaged model's PESQ on valid, though level with its control: the packaged one stays
    s["valid"]["unpaired"]["pesq"]["mean"] = 1.73
    assert sk.choose_unpaired(s) is None
    # the paired round never takes an unpaired arm, and its rule finds no control here
    assert sk.choose_same_voice(s) is None


def test_each_arm_is_compared_with_the_control_of_its_own_kind():
    gains = {"control": (0.0, 0.0), "sisdr": (0.01, 0.01), "unpaired_control": (-0.2, 0.0),
             "unpaired_selfbabble": (-0.2, 0.02)}
    summary = sk.summarize(_rows(gains), _sets(), list(gains))
    assert set(summary["valid"]["vs_control"]) == {"sisdr"}
    assert set(summary["valid"]["vs_unpaired_control"]) == {"unpaired_selfbabble"}
    d = summary["valid_babble"]["vs_unpaired_control"]["unpaired_selfbabble"]["stoi"]
    assert abs(d["mean"] - (0.02 + 0.002 * 4.5)) < 1e-9
    # round 1 (validation babble STOI over `default`) only ever picks a paired arm
    assert summary["chosen"] == "sisdr"


def test_scores_are_cached_per_model_and_scored_again_for_another(tmp_path):
    """A cached row is reused only for the same model files: a folder exported again under the same system
    name (another hash) is scored again, not read from the old rows."""
    import json

    import numpy as np
    import soundfile as sf

    from upcycle_se.inference import packaged_model_dir

    rng = np.random.default_rng(0)
    files = {}
    for i in range(2):
        t = np.arange(24000) / 16000
        voiced = sum(np.sin(2 * np.pi * k * (150 + 40 * i) * t) / k for k in range(1, 6))
        clean = 0.1 * voiced * (np.sin(2 * np.pi * 3 * t) > 0)
        sf.write(tmp_path / f"c{i}.wav", clean, 16000)
        sf.write(tmp_path / f"n{i}.wav", clean + 0.02 * rng.standard_normal(t.size), 16000)
        files[f"f{i}"] = {"noisy": str(tmp_path / f"n{i}.wav"), "clean": str(tmp_path / f"c{i}.wav")}
    model, cache = packaged_model_dir("small"), tmp_path / "scores" / "small.json"
    first = sk.score("small", model, files, cache, log=lambda m: None)
    assert set(first) == {"f0", "f1"} and all(np.isfinite(r["pesq"]) and 0 < r["stoi"] <= 1 for r in first.values())
    saved = json.loads(cache.read_text())
    assert saved["model_key"] == sk._model_key(model)
    # the same model: the cached rows are returned as they are (marked here to tell them apart)
    saved["rows"]["f0"]["pesq"] = -1.0
    cache.write_text(json.dumps(saved))
    assert sk.score("small", model, files, cache, log=lambda m: None)["f0"]["pesq"] == -1.0
    # another model's rows under the same name: discarded and scored again
    saved["model_key"] = "another export"
    cache.write_text(json.dumps(saved))
    again = sk.score("small", model, files, cache, log=lambda m: None)
    assert again["f0"]["pesq"] == first["f0"]["pesq"]


def test_added_self_babble_keeps_every_broad_file_and_adds_the_same_babble_files(tmp_path):
    """``selfbabble_add``'s corpus: every file of the main corpus (linked), plus each replaced file of
    ``selfbabble``'s corpus under a new id (``p225_001x``) with its clean file linked: the same babble draws."""
    import json

    import numpy as np
    import soundfile as sf

    src = tmp_path / "corpus"
    for sub in ("clean_trainset_wav", "noisy_trainset_wav", "logfiles"):
        (src / sub).mkdir(parents=True)
    lines = []
    for s, spk in enumerate(("p225", "p226")):
        for u in range(3):
            t = np.arange(12000) / 16000
            clean = 0.1 * np.sin(2 * np.pi * (120 + 40 * s + 15 * u) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
            uid = f"{spk}_00{u + 1}"
            sf.write(src / "clean_trainset_wav" / f"{uid}.wav", clean, 16000)
            sf.write(src / "noisy_trainset_wav" / f"{uid}.wav", clean + 0.01, 16000)
            lines.append(f"{uid} broad {5.0 * u}")
    (src / "logfiles" / "log_trainset.txt").write_text("\n".join(lines) + "\n")
    (src / "corpus_info.json").write_text(json.dumps({"config": {"seed": 0}}))

    added = sk.build_self_babble_corpus(tmp_path, log=lambda m: None, every=2, extra=True)
    replaced = sk.build_self_babble_corpus(tmp_path, log=lambda m: None, every=2)
    assert added == tmp_path / "selfbabble_add" / "corpus"
    log = {ln.split()[0]: ln.split()[1:] for ln in (added / "logfiles" / "log_trainset.txt").read_text().splitlines()}
    extra = sorted(u for u in log if u.endswith("x"))
    assert extra == ["p225_001x", "p225_003x", "p226_001x", "p226_003x"] and len(log) == 10
    for uid in extra:
        assert log[uid] == ["self_babble", log[uid[:-1]][1]]
        assert log[uid[:-1]][0] == "broad"  # the broad file stays beside it
        assert (added / "noisy_trainset_wav" / f"{uid[:-1]}.wav").samefile(src / "noisy_trainset_wav" / f"{uid[:-1]}.wav")
        assert (added / "clean_trainset_wav" / f"{uid}.wav").samefile(src / "clean_trainset_wav" / f"{uid[:-1]}.wav")
        assert (added / "noisy_trainset_wav" / f"{uid}.wav").read_bytes() == \
            (replaced / "noisy_trainset_wav" / f"{uid[:-1]}.wav").read_bytes()


def test_round_three_arm_differs_from_selfbabble_sisdr_in_the_data_and_the_same_steps(tmp_path):
    base = set(sk.train_command("selfbabble_sisdr", tmp_path, True))
    diff = set(sk.train_command("selfbabble_add", tmp_path, True)) - base
    assert {o.split("=")[0] for o in diff} == {"--data_folder", "--prep_folder", "--output_folder", "--n_epochs",
                                               "--n_epochs_decay"}
    # 1,200 files + 600 added = 450 steps of batch 4 per epoch: 3 + 1 epochs are selfbabble_sisdr's 1,800 steps
    epochs = {o.split("=")[0]: int(o.split("=")[1]) for o in diff if "epochs" in o}
    assert (epochs["--n_epochs"] + epochs["--n_epochs_decay"]) * 450 == (4 + 2) * 300
    # every file with a babble twin: 2,400 files, 600 steps per epoch, 2 + 1 epochs
    diff = set(sk.train_command("selfbabble_add1", tmp_path, True)) - base
    epochs = {o.split("=")[0]: int(o.split("=")[1]) for o in diff if "epochs" in o}
    assert (epochs["--n_epochs"] + epochs["--n_epochs_decay"]) * 600 == (4 + 2) * 300
    assert f"--data_folder={tmp_path / 'selfbabble_add1' / 'corpus'}" in diff


def _round3_summary(arms):
    """A hand-made summary for round 3's rule: ``arms``: arm -> {(set, metric): (mean, CI)} against the
    incumbent; anything not given is (0, 0.01)."""
    sets = ("valid", "valid_babble", sk.SELF_BABBLE, sk.HELDOUT)
    s = {"arms": [sk.INCUMBENT, *arms]}
    for name in sets:
        s[name] = {f"vs_{sk.INCUMBENT}": {}}
        for arm, d in arms.items():
            s[name][f"vs_{sk.INCUMBENT}"][arm] = {
                m: dict(zip(("mean", "ci"), d.get((name, m), (0.0, 0.01)))) for m in ("pesq", "stoi")}
    return s


def test_round_three_takes_a_significant_pesq_gain_that_costs_no_stoi_anywhere():
    arms = {
        # the largest PESQ gain, but STOI significantly down on same-voice babble: out
        "babble_cost": {("valid", "pesq"): (0.10, 0.03), (sk.SELF_BABBLE, "stoi"): (-0.01, 0.005)},
        # a gain on valid, a significant PESQ loss on the held-out families: out
        "heldout_cost": {("valid", "pesq"): (0.08, 0.03), (sk.HELDOUT, "pesq"): (-0.05, 0.03)},
        # gains on both, neither significant: out
        "noise": {("valid", "pesq"): (0.02, 0.03), (sk.HELDOUT, "pesq"): (0.02, 0.03)},
        "small": {(sk.HELDOUT, "pesq"): (0.04, 0.02)},
        "big": {("valid", "pesq"): (0.05, 0.02), (sk.HELDOUT, "pesq"): (0.01, 0.02)},
    }
    assert sk.choose_round3(_round3_summary(arms)) == "big"  # mean gain 0.030 against small's 0.020
    del arms["big"]
    assert sk.choose_round3(_round3_summary(arms)) == "small"
    del arms["small"]
    assert sk.choose_round3(_round3_summary(arms)) is None
    s = _round3_summary({"small": {(sk.HELDOUT, "pesq"): (0.04, 0.02)}})
    del s[sk.HELDOUT]  # without the held-out families the rule cannot see the clicks cost: no choice
    assert sk.choose_round3(s) is None


def test_summary_compares_with_the_incumbent_per_held_out_family():
    import numpy as np

    families = ("clicks", "pink")
    sets = {name: {f"{name}{i}": {"family": families[i % 2], "snr": "5.0"} for i in range(8)}
            for name in ("valid", "valid_babble", sk.SELF_BABBLE, sk.HELDOUT)}
    systems = {"default": 0.0, "noisy": -0.2, sk.INCUMBENT: 0.0, "long": 0.05}
    rows = {name: {sy: {f: {"pesq": 1.5 + shift + (0.1 if files[f]["family"] == "clicks" and sy == "long" else 0)
                            + 0.01 * i, "stoi": 0.9 + 0.001 * i}
                        for i, f in enumerate(files)} for sy, shift in systems.items()} for name, files in sets.items()}
    summary = sk.summarize(rows, sets, [sk.INCUMBENT, "long"])
    fam = summary[sk.HELDOUT]["by_family"]
    assert np.isclose(fam["clicks"]["long"]["pesq"]["mean"], 0.15) and np.isclose(fam["pink"]["long"]["pesq"]["mean"], 0.05)
    assert summary["chosen_round3"] == "long"
    assert "by_family" not in summary["valid"] or not summary["valid"]["by_family"]


def _round4_summary(arms, noisy=None):
    """Round 4's hand-made summary: :func:`_round3_summary` plus STOI gains over the noisy input
    (``noisy``: system -> {set: mean}; anything not given is +0.005)."""
    s = _round3_summary(arms)
    noisy = noisy or {}
    for name in ("valid", "valid_babble", sk.SELF_BABBLE, sk.HELDOUT):
        s[name]["vs_noisy"] = {a: {"stoi": {"mean": noisy.get(a, {}).get(name, 0.005), "ci": 0.005},
                                   "pesq": {"mean": 0.3, "ci": 0.05}} for a in [sk.INCUMBENT, *arms]}
    return s


def test_round_four_trades_a_bounded_stoi_loss_for_pesq_among_its_own_arms():
    gain = {("valid", "pesq"): (0.04, 0.03), (sk.HELDOUT, "pesq"): (0.06, 0.02)}
    # a significant STOI loss of 0.008 on same-voice babble, still above noisy: round 3 refused it, round 4 takes it
    arms = {"add_long_ema": {**gain, (sk.SELF_BABBLE, "stoi"): (-0.008, 0.003)}}
    assert sk.choose_round3(_round4_summary(arms)) is None
    assert sk.choose_round4(_round4_summary(arms)) == "add_long_ema"
    # a loss beyond the bound: out
    arms = {"add_long_ema": {**gain, (sk.SELF_BABBLE, "stoi"): (-0.011, 0.003)}}
    assert sk.choose_round4(_round4_summary(arms)) is None
    # within the bound but below the noisy input where the incumbent is above it: out
    arms = {"add_long_ema": {**gain, ("valid_babble", "stoi"): (-0.008, 0.003)}}
    assert sk.choose_round4(_round4_summary(arms, {"add_long_ema": {"valid_babble": -0.002}})) is None
    # ... allowed where the incumbent is itself below the noisy input and the arm is not further below
    s = _round4_summary(arms, {"add_long_ema": {"valid_babble": -0.002}, sk.INCUMBENT: {"valid_babble": -0.003}})
    assert sk.choose_round4(s) == "add_long_ema"
    # the larger mean PESQ gain wins; an arm not of round 4 is never taken, however good
    arms = {"add_long_ema": gain, "long_ema": {(sk.HELDOUT, "pesq"): (0.12, 0.03)},
            "selfbabble_add": {(sk.HELDOUT, "pesq"): (0.30, 0.03)}}
    assert sk.choose_round4(_round4_summary(arms)) == "long_ema"  # 0.06 against 0.05
    # a significant PESQ loss on one set, or no significant gain: out
    arms = {"long_ema": {("valid", "pesq"): (-0.05, 0.03), (sk.HELDOUT, "pesq"): (0.12, 0.03)},
            "add_long_ema": {("valid", "pesq"): (0.02, 0.03), (sk.HELDOUT, "pesq"): (0.02, 0.03)}}
    assert sk.choose_round4(_round4_summary(arms)) is None


def test_round_four_arms_differ_from_their_references_by_the_weight_average_and_the_steps(tmp_path):
    long_cmd = dict(a.split("=", 1) for a in sk.train_command("long", tmp_path, True)[3:])
    ema_cmd = dict(a.split("=", 1) for a in sk.train_command("long_ema", tmp_path, True)[3:])
    diff = {k: (long_cmd.get(k), ema_cmd.get(k)) for k in set(long_cmd) | set(ema_cmd) if long_cmd.get(k) != ema_cmd.get(k)}
    assert diff == {"--ema_decay": (None, "0.999"), "--output_folder": (str(tmp_path / "runs" / "long"),
                                                                       str(tmp_path / "runs" / "long_ema"))}
    add = dict(a.split("=", 1) for a in sk.train_command("add_long_ema", tmp_path, True)[3:])
    assert add["--init_from"] == str(tmp_path / "models" / "selfbabble_add")
    assert add["--data_folder"] == str(tmp_path / "selfbabble_add" / "corpus")
    # the same 7,200 steps as `long`: 450 steps per epoch on the 1,800-file corpus, 300 on the 1,200-file one
    assert (int(add["--n_epochs"]) + int(add["--n_epochs_decay"])) * 450 == \
        (int(ema_cmd["--n_epochs"]) + int(ema_cmd["--n_epochs_decay"])) * 300 == 7200


def _round5_summary(arms):
    """Round 5's hand-made summary: ``arms``: arm -> {(set, metric): (mean, CI)} against ``add_long_ema``;
    anything not given is (0, 0.01)."""
    sets = ("valid", "valid_babble", sk.SELF_BABBLE, sk.HELDOUT, sk.PIPER_BABBLE, sk.REAL_BABBLE)
    s = {"arms": [sk.INCUMBENT5, *arms]}
    for name in sets:
        s[name] = {f"vs_{sk.INCUMBENT5}": {arm: {m: dict(zip(("mean", "ci"), d.get((name, m), (0.0, 0.01))))
                                                 for m in ("pesq", "stoi")} for arm, d in arms.items()}}
    return s


def test_round_five_takes_back_real_voice_stoi_at_no_pesq_cost():
    real = {(sk.REAL_BABBLE, "stoi"): (0.015, 0.008)}
    assert sk.choose_round5(_round5_summary({"add_real": real})) == "add_real"
    # no significant gain on the real voices: out, however large its gain on a synthetic set
    assert sk.choose_round5(_round5_summary({"add_real": {(sk.REAL_BABBLE, "stoi"): (0.015, 0.016),
                                                          ("valid_babble", "stoi"): (0.05, 0.01)}})) is None
    # a mean PESQ loss beyond 0.02 on one of the three PESQ sets, even if not significant: out
    assert sk.choose_round5(_round5_summary({"add_real": {**real, (sk.HELDOUT, "pesq"): (-0.03, 0.04)}})) is None
    assert sk.choose_round5(_round5_summary({"add_real": {**real, (sk.REAL_BABBLE, "pesq"): (-0.03, 0.04)}})) is None
    # a significant PESQ loss within 0.02, or a significant STOI loss on a synthetic set: out
    assert sk.choose_round5(_round5_summary({"add_real": {**real, ("valid", "pesq"): (-0.015, 0.01)}})) is None
    assert sk.choose_round5(_round5_summary({"add_real": {**real, (sk.PIPER_BABBLE, "stoi"): (-0.01, 0.005)}})) is None
    # the larger real-voice STOI gain wins; arms of other rounds are never taken
    arms = {"add_real": real, "add_stoi": {(sk.REAL_BABBLE, "stoi"): (0.02, 0.008)},
            "long_ema": {(sk.REAL_BABBLE, "stoi"): (0.05, 0.008)}}
    assert sk.choose_round5(_round5_summary(arms)) == "add_stoi"
    # without the real-voice set scored, nothing is chosen
    s = _round5_summary({"add_real": real})
    del s[sk.REAL_BABBLE]
    assert sk.choose_round5(s) is None


def test_round_five_arms_differ_from_the_incumbent_in_one_lever_and_train_the_same_steps(tmp_path):
    base = dict(a.split("=", 1) for a in sk.train_command("add_long_ema", tmp_path, True)[3:])
    real = dict(a.split("=", 1) for a in sk.train_command("add_real", tmp_path, True)[3:])
    stoi = dict(a.split("=", 1) for a in sk.train_command("add_stoi", tmp_path, True)[3:])
    for cmd in (real, stoi):
        assert cmd["--init_from"] == str(tmp_path / "models" / "add_long_ema")
        assert (cmd["--sisdr_weight"], cmd["--ema_decay"]) == (base["--sisdr_weight"], base["--ema_decay"])
    assert real["--data_folder"] == str(tmp_path / sk.REAL_CORPUS / "corpus") and "--stoi_weight" not in real
    assert stoi["--data_folder"] == base["--data_folder"] and stoi["--stoi_weight"] == "0.2"
    # 3,600 steps each: 600 per epoch on the 2,400-file corpus, 450 on the 1,800-file one
    assert (int(real["--n_epochs"]) + int(real["--n_epochs_decay"])) * 600 == 3600
    assert (int(stoi["--n_epochs"]) + int(stoi["--n_epochs_decay"])) * 450 == 3600
    assert 1800 + 5 * sk.REAL_UTTS == 2400


def test_summary_compares_round_five_arms_with_its_incumbent_per_babble_family():
    files = {f"a{i}": {"family": "real_babble_own" if i % 2 else "real_babble_other", "snr": "0.0"} for i in range(8)}
    sets = {**_sets(), sk.REAL_BABBLE: files}
    rows = {name: {s: {f: {"pesq": 1.2 + 0.01 * i, "stoi": 0.7 + 0.01 * i + d * (i % 2)} for i, f in enumerate(fs)}
                   for s, d in (("noisy", 0.0), ("default", 0.0), ("add_long_ema", 0.0), ("add_real", 0.03))}
            for name, fs in sets.items()}
    summary = sk.summarize(rows, sets, ["add_long_ema", "add_real"])
    assert summary["chosen_round5"] is None  # the other round-5 sets were not scored
    s = summary[sk.REAL_BABBLE]
    assert abs(s["vs_add_long_ema"]["add_real"]["stoi"]["mean"] - 0.015) < 1e-9
    fam = s["by_family"]
    assert abs(fam["real_babble_own"]["add_real"]["stoi"]["mean"] - 0.03) < 1e-9
    assert abs(fam["real_babble_other"]["add_real"]["stoi"]["mean"]) < 1e-9
    assert "add_long_ema" not in fam["real_babble_own"] and "noisy" in fam["real_babble_own"]


def test_round_five_unpaired_needs_a_significant_pesq_gain_and_keeps_stoi_everywhere():
    def summary(d):
        sets = ("valid", "valid_babble", sk.SELF_BABBLE, sk.HELDOUT, sk.PIPER_BABBLE, sk.REAL_BABBLE)
        s = {"arms": [sk.UNPAIRED_INCUMBENT, "unpaired_real"]}
        for name in sets:
            s[name] = {f"vs_{sk.UNPAIRED_INCUMBENT}": {"unpaired_real": {
                m: dict(zip(("mean", "ci"), d.get((name, m), (0.0, 0.01)))) for m in ("pesq", "stoi")}}}
        return s

    gain = {(sk.REAL_BABBLE, "pesq"): (0.05, 0.02)}
    assert sk.choose_round5_unpaired(summary(gain)) == "unpaired_real"
    assert sk.choose_round5_unpaired(summary({(sk.REAL_BABBLE, "pesq"): (0.05, 0.06)})) is None  # not significant
    assert sk.choose_round5_unpaired(summary({**gain, ("valid", "pesq"): (-0.03, 0.04)})) is None  # beyond 0.02
    assert sk.choose_round5_unpaired(summary({**gain, (sk.REAL_BABBLE, "stoi"): (-0.01, 0.005)})) is None
    assert sk.choose_round5_unpaired(summary({**gain, ("valid_babble", "stoi"): (-0.01, 0.005)})) is None
    cmd = dict(a.split("=", 1) for a in sk.train_command("unpaired_real", Path("/w"), True)[3:])
    assert (cmd["--unpaired"], cmd["--loss_type"], cmd["--init_from"]) == ("shuffle", "gan", "/w/models/unpaired_selfbabble")
    assert cmd["--data_folder"] == f"/w/{sk.REAL_CORPUS}/corpus" and "--sisdr_weight" not in cmd
