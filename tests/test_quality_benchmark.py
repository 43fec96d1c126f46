"""benchmarks/quality.py end to end on the tiny preset (baselines + one 1-epoch system), plus its helpers."""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import quality  # noqa: E402


def test_ci95_matches_student_t():
    s = quality.ci95([1.0, 2.0, 3.0, float("nan")])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0)
    assert s["ci"] == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)


def test_write_results_replaces_only_the_quality_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# R\n\n{quality.BEGIN}\nold\n{quality.END}\n\n## Speed\nkeep me\n")
    quality.write_results(path, f"{quality.BEGIN}\nnew\n{quality.END}\n")
    text = path.read_text()
    assert "new" in text and "old" not in text and "## Speed\nkeep me" in text
    assert text.count(quality.BEGIN) == 1
    # another budget's section goes beside it and leaves the `cpu` budget's table as it is
    quality.write_results(path, "{}\nlong run\n{}\n".format(*quality.markers("finetune")), "finetune")
    text = path.read_text()
    assert "new" in text and "long run" in text and text.count(quality.BEGIN) == 1


def test_the_budgets_are_those_of_the_shipped_models_the_paper_and_the_cpu():
    """One budget per packaged model (`cpu` made `small`, `finetune` `default`, `unpaired_pauses_long`
    `unpaired`), the paper's configuration, and the tests' `tiny`; the paper budgets keep exactly the
    paper's four systems."""
    assert {"cpu", "gpu", "finetune", "unpaired_pauses_long", "tiny"} <= set(quality.BUDGETS)
    assert quality.BUDGETS["cpu"].systems == quality.PAPER_SYSTEMS
    # The authors' generator has only the polar mask: the gpu budget runs the paper's systems without the ablation.
    assert quality.BUDGETS["gpu"].systems == [s for s in quality.PAPER_SYSTEMS if s != "paired_magnitude"]
    assert quality.BUDGETS["gpu"].hparams == "hparams/upcycle.yaml" and quality.BUDGETS["gpu"].device == "cuda:0"
    for budget in quality.BUDGETS.values():
        assert set(budget.systems) <= set(quality.SYSTEMS)


def test_a_systems_own_epochs_override_the_budgets(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    budget = quality.BUDGETS["cpu"]
    longer = replace(quality.SYSTEMS["paired"], n_epochs=10, n_epochs_decay=4)
    cmd = quality.train_command(budget, longer, tmp_path, tmp_path / "prep")
    assert {"--n_epochs=10", "--n_epochs_decay=4", "--loss_type=l1gan"} <= set(cmd)
    assert [c for c in cmd if c.startswith("--n_epochs=")] == ["--n_epochs=10"]  # given once, not twice
    assert quality._epochs(budget, longer, "n_epochs") == 10
    assert quality._epochs(budget, quality.SYSTEMS["paired"], "n_epochs") == 2


def test_unpaired_pauses_long_budget_trains_its_start_on_with_its_setting_then_remix_40(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)
    b = quality.BUDGETS["unpaired_pauses_long"]
    assert (quality.UNPAIRED_PAUSES_FROM / "generator.ckpt").is_file()
    cont, heavy = (quality.train_command(b, quality.SYSTEMS[n], tmp_path, tmp_path / "prep") for n in b.systems)
    # unpaired throughout, the starting point's opt-ins with its identity decay spent, 4 + 2 epochs at lr 5e-4
    assert {"--unpaired=shuffle", "--loss_type=gan", f"--init_from={quality.UNPAIRED_PAUSES_FROM}",
            "--generator_preset=base", "--remix_weight=20", "--remix_snr=[-5,20]", "--identity_decay_steps=1",
            "--noisy_cycle_scale=0", "--ema_decay=0.998", "--remix_noise=pauses", "--n_epochs=4",
            "--n_epochs_decay=2", "--lr=0.0005", "--precision=bf16"} <= set(cont)
    assert {c for c in set(heavy) - set(cont) if not c.startswith("--output_folder")} == {"--remix_weight=40"}
    assert not any(c.startswith("--unpaired=paired") for c in cont + heavy)


def test_finetune_budget_starts_from_the_shipped_model_and_trains_bf16_only_where_the_cpu_has_it(tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    budget = quality.BUDGETS["finetune"]
    assert (quality.FINETUNE_FROM / "generator.ckpt").is_file()
    for has_bf16 in (True, False):
        monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: has_bf16)
        control, compressed = (quality.train_command(budget, quality.SYSTEMS[n], tmp_path, tmp_path / "prep")
                               for n in budget.systems)
        assert {f"--init_from={quality.FINETUNE_FROM}", "--lr=0.0003", "--generator_preset=base",
                "--loss_type=l1"} <= set(control) & set(compressed)
        assert {c for c in set(compressed) - set(control) if "output_folder" not in c} == {"--spectral_compress=0.3"}
        assert ("--precision=bf16" in control) is has_bf16
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)  # `cpu` stays as it ran: fp32
    cpu = quality.train_command(quality.BUDGETS["cpu"], quality.SYSTEMS["paired"], tmp_path, tmp_path)
    assert not any(c.startswith("--precision") for c in cpu)

def test_peers_are_default_baselines_and_a_missing_one_is_left_out_unless_asked_for(monkeypatch):
    assert {"rnnoise", "webrtc", "noisereduce"} <= set(quality.BASELINES_DEFAULT) <= set(quality.BASELINE_LABELS)
    monkeypatch.setattr("benchmarks.peers.missing_peers", lambda: {"rnnoise": "install the peers extra"})
    logged = []
    assert quality.available_baselines(quality.BASELINES_DEFAULT, logged.append) == [
        n for n in quality.BASELINES_DEFAULT if n != "rnnoise"]
    assert logged == ["rnnoise: left out, install the peers extra"]
    assert quality.available_baselines(["mmse_lsa"], logged.append, explicit=True) == ["mmse_lsa"]
    with pytest.raises(SystemExit, match="rnnoise: install the peers extra"):
        quality.available_baselines(["mmse_lsa", "rnnoise"], logged.append, explicit=True)


@pytest.mark.slow
def test_tiny_budget_end_to_end(tmp_path):
    pytest.importorskip("pesq")
    from upcycle_se.corpus.speech import require_tools
    from upcycle_se.errors import UserError

    try:
        require_tools()
    except UserError as err:
        pytest.skip(str(err))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Speed\nuntouched\n")
    state = quality.run("tiny", tmp_path / "work", results, n_jobs=1, command="python benchmarks/quality.py --budget tiny")

    text = results.read_text()
    begin, end = quality.markers("tiny")  # a budget's own section: the `cpu` budget's table is left alone
    assert "## Speed\nuntouched" in text and begin in text and end in text and quality.BEGIN not in text
    assert "not VoiceBank-DEMAND scores" in text
    from benchmarks.peers import PEER_NAMES, missing_peers

    peers = set(PEER_NAMES) - set(missing_peers())  # the peers extra's, where it is installed
    assert set(state["rows"]) == {"noisy", "spectral_subtraction", "wiener", "mmse_lsa", "paired", *peers}
    for row in state["rows"].values():  # every row scored on the same test files, finite means
        assert set(row["rows"]) == set(state["rows"]["noisy"]["rows"])
        assert all(math.isfinite(row["summary"][m]["mean"]) for m in ("pesq", "stoi", "covl"))
    record = state["rows"]["paired"]["record"]
    assert record["epochs"] == 1 and record["steps"] >= 1 and record["wall_seconds"] > 0
    assert "| Up-Cycle-SENet, paired, L1+GAN |" in text

    # A rerun with one baseline, not the first one scored: the noisy row comes from the cache, unchanged.
    again = quality.run("tiny", tmp_path / "work", results, baselines=["mmse_lsa"], n_jobs=1)
    assert set(again["rows"]) == {"noisy", "mmse_lsa", "paired"}
    assert again["rows"]["noisy"]["rows"] == state["rows"]["noisy"]["rows"]
    assert again["rows"]["mmse_lsa"]["rows"] == state["rows"]["mmse_lsa"]["rows"]

    # Budgets sharing a work folder keep their own state: a later run of another budget overwrites
    # quality_state.json, and --render-only of this budget still reads its own.
    (tmp_path / "work" / "quality_state.json").write_text("{}")
    note = tmp_path / "analysis.md"
    note.write_text("**Written analysis.** Rendered again from this budget's own state.\n")
    assert quality.main(["--budget", "tiny", "--work", str(tmp_path / "work"), "--results", str(results),
                         "--render-only", "--analysis", str(note)]) == 0
    text = results.read_text()
    assert "Rendered again from this budget's own state." in text and "| Up-Cycle-SENet, paired, L1+GAN |" in text
