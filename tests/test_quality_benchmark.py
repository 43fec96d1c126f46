"""benchmarks/quality.py end to end on the tiny preset (baselines + one 1-epoch system), plus its helpers."""
from __future__ import annotations

import math
import sys
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
    quality.write_results(path, "{}\nlong run\n{}\n".format(*quality.markers("quality")), "quality")
    text = path.read_text()
    assert "new" in text and "long run" in text and text.count(quality.BEGIN) == 1


def test_a_systems_own_epochs_and_generator_override_the_budgets(tmp_path, monkeypatch):
    """The `session` budget trains its two systems for different lengths and generator sizes; the paper
    budgets keep exactly the paper's four systems."""
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    budget = quality.BUDGETS["session"]
    cmds = {n: quality.train_command(budget, quality.SYSTEMS[n], tmp_path, tmp_path / "prep") for n in budget.systems}
    paired, unpaired = cmds["paired_l1_base"], cmds["unpaired_shuffle_iddecay_small"]
    assert {"--n_epochs=10", "--n_epochs_decay=4", "--generator_preset=base", "--loss_type=l1"} <= set(paired)
    assert {"--n_epochs=2", "--n_epochs_decay=1", "--generator_preset=small", "--identity_decay_steps=600"} \
        <= set(unpaired)
    assert [c for c in paired if c.startswith("--n_epochs=")] == ["--n_epochs=10"]  # given once, not twice
    # the unpaired system's paired reference at equal steps (run with --systems paired_l1_small)
    reference = quality.train_command(budget, quality.SYSTEMS["paired_l1_small"], tmp_path, tmp_path / "prep")
    assert {"--n_epochs=2", "--n_epochs_decay=1", "--generator_preset=small", "--loss_type=l1",
            "--unpaired=paired"} <= set(reference)
    assert quality._epochs(budget, quality.SYSTEMS["paired_l1_base"], "n_epochs") == 10
    assert quality._epochs(quality.BUDGETS["cpu"], quality.SYSTEMS["paired"], "n_epochs") == 2
    assert quality.BUDGETS["cpu"].systems == quality.BUDGETS["gpu"].systems == quality.PAPER_SYSTEMS


def test_unpaired_budget_runs_the_paper_setting_the_opt_in_remixes_and_the_paired_reference_at_equal_steps(
        tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    budget = quality.BUDGETS["unpaired"]
    for has_bf16 in (True, False):
        monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: has_bf16)
        cmds = {n: quality.train_command(budget, quality.SYSTEMS[n], tmp_path, tmp_path / "prep")
                for n in budget.systems}
        assert set(cmds) == {"unpaired_shuffle_small", "unpaired_remix_small", "unpaired_remixsnr_small",
                             "paired_l1_small"}
        same = {"--n_epochs=2", "--n_epochs_decay=1", "--generator_preset=small", "--batch_size=4", "--lr=0.001",
                "--crop_samples=16000"}
        assert all(same <= set(c) for c in cmds.values())  # equal steps and sizes
        paper, remix = cmds["unpaired_shuffle_small"], cmds["unpaired_remix_small"]
        assert not any(c.startswith(("--identity_decay", "--noisy_cycle", "--c2n", "--remix")) for c in paper)
        # the opt-in system differs from the paper's setting by the remix weight alone
        assert {c for c in set(remix) - set(paper) if "output_folder" not in c} == {"--remix_weight=20"}
        assert {c for c in set(cmds["unpaired_remixsnr_small"]) - set(remix) if "output_folder" not in c} \
            == {"--remix_snr=[-5,20]"}
        assert {"--unpaired=paired", "--loss_type=l1"} <= set(cmds["paired_l1_small"])
        # one precision for all three: bf16 where the CPU has it, fp32 elsewhere
        assert all(("--precision=bf16" in c) is has_bf16 for c in cmds.values())
    # the clean-side-cycle option measured earlier still builds its command (run it with --systems)
    opt_in = quality.train_command(budget, quality.SYSTEMS["unpaired_cleancycle_res_small"], tmp_path, tmp_path)
    assert {"--identity_decay_steps=600", "--noisy_cycle_scale=0", "--c2n_mode=residual"} <= set(opt_in)


def test_unpaired_base_budget_compares_the_paper_setting_and_the_opt_ins_with_paired_at_equal_steps(
        tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)
    budget = quality.BUDGETS["unpaired_base"]
    cmds = {n: quality.train_command(budget, quality.SYSTEMS[n], tmp_path, tmp_path / "prep") for n in budget.systems}
    same = {"--n_epochs=4", "--n_epochs_decay=2", "--generator_preset=base", "--batch_size=4", "--lr=0.001",
            "--crop_samples=16000", "--precision=bf16"}
    assert all(same <= set(c) for c in cmds.values())
    paper, opt_in = cmds["unpaired_shuffle_base"], cmds["unpaired_remixsnr_lean_base"]
    assert not any(c.startswith(("--identity_decay", "--noisy_cycle", "--c2n", "--remix")) for c in paper)
    assert {c for c in set(opt_in) - set(paper) if "output_folder" not in c} == {
        "--remix_weight=20", "--remix_snr=[-5,20]", "--identity_decay_steps=600", "--noisy_cycle_scale=0"}
    assert {"--unpaired=paired", "--loss_type=l1"} <= set(cmds["paired_l1_base_eq"])


def test_unpaired_long_budget_trains_the_packaged_unpaired_model_on_with_its_own_opt_ins(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)
    budget = quality.BUDGETS["unpaired_long"]
    # it starts from the shipped unpaired model, which never saw a clean/noisy pair
    assert (quality.UNPAIRED_FROM / "generator.ckpt").is_file()
    assert "unpaired" in (quality.UNPAIRED_FROM / "MODEL.md").read_text().lower()
    control, compressed = (quality.train_command(budget, quality.SYSTEMS[n], tmp_path, tmp_path / "prep")
                           for n in budget.systems)
    assert {"--unpaired=shuffle", "--loss_type=gan", f"--init_from={quality.UNPAIRED_FROM}", "--lr=0.0005",
            "--n_epochs=5", "--n_epochs_decay=2", "--precision=bf16"} <= set(control)
    # the same opt-in losses as the model it starts from, but its identity decay already spent
    origin = quality.train_command(quality.BUDGETS["unpaired_base"], quality.SYSTEMS["unpaired_remixsnr_lean_base"],
                                   tmp_path, tmp_path / "prep")
    assert {c for c in set(origin) - set(control) if c.startswith(("--remix", "--identity", "--noisy_cycle",
                                                                   "--generator"))} == {"--identity_decay_steps=600"}
    assert "--identity_decay_steps=1" in control
    assert {c for c in set(compressed) - set(control) if "output_folder" not in c} == {"--spectral_compress=0.3"}
    assert not any(c.startswith("--unpaired=paired") for c in control + compressed)


def test_unpaired_ema_budget_is_the_unpaired_long_control_plus_the_weight_average_only(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "_epoch_scale", lambda *a: 1)
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)
    cmd = {n: quality.train_command(b, quality.SYSTEMS[n], tmp_path, tmp_path / "prep")
           for b in (quality.BUDGETS["unpaired_long"], quality.BUDGETS["unpaired_ema"]) for n in b.systems}
    control = cmd["unpaired_remixsnr_lean_base_ft"]
    ema, teacher = cmd["unpaired_remixsnr_lean_base_ema"], cmd["unpaired_remixsnr_lean_base_emat"]

    def differ(a, b):
        return {c for c in set(a) - set(b) if not c.startswith(("--output_folder", "--prep_folder"))}

    # fewer epochs than unpaired_long; otherwise only the opt-in average, then the teacher
    assert differ(ema, control) == {"--ema_decay=0.998", "--n_epochs=2", "--n_epochs_decay=1"}
    assert differ(teacher, ema) == {"--remix_teacher=ema"}
    assert f"--init_from={quality.UNPAIRED_FROM}" in ema and "--unpaired=shuffle" in ema
    # the paper's discriminators (unpaired_disc) and the noise mined from pauses (unpaired_pauses): one change each
    for budget, changes in (("unpaired_disc", [{"--discriminator_preset=paper", "--n_scales=3"},
                                              {"--discriminator_preset=paper", "--n_scales=3", "--remix_weight=10"}]),
                            ("unpaired_pauses", [{"--remix_noise=pauses"}])):
        b = quality.BUDGETS[budget]
        for name, change in zip(b.systems, changes):
            cmd = quality.train_command(b, quality.SYSTEMS[name], tmp_path, tmp_path / "prep")
            assert differ(cmd, ema) == change
            assert {c.split("=")[0] for c in differ(ema, cmd)} <= {"--remix_weight"}
    # unpaired_pauses_long: the unpaired_pauses setting, from its shipped model, twice the epochs; then remix 40
    pauses = quality.train_command(quality.BUDGETS["unpaired_pauses"],
                                   quality.SYSTEMS["unpaired_remixsnr_lean_base_ema_pauses"], tmp_path, tmp_path / "p")
    b = quality.BUDGETS["unpaired_pauses_long"]
    cont, heavy = (quality.train_command(b, quality.SYSTEMS[n], tmp_path, tmp_path / "prep") for n in b.systems)
    assert (quality.UNPAIRED_PAUSES_FROM / "generator.ckpt").is_file()
    assert differ(cont, pauses) == {f"--init_from={quality.UNPAIRED_PAUSES_FROM}", "--n_epochs=4",
                                    "--n_epochs_decay=2"}
    assert {c.split("=")[0] for c in differ(pauses, cont)} == {"--init_from", "--n_epochs", "--n_epochs_decay"}
    assert differ(heavy, cont) == {"--remix_weight=40"}
    # unpaired_pauses_more: the weight-40 system again, from its shipped model, 2 + 1 epochs
    more = quality.train_command(quality.BUDGETS["unpaired_pauses_more"],
                                 quality.SYSTEMS["unpaired_pauses40_base_ft2"], tmp_path, tmp_path / "prep")
    assert differ(more, heavy) == {f"--init_from={quality.UNPAIRED_PAUSES_LONG_FROM}", "--n_epochs=2",
                                   "--n_epochs_decay=1"}
    assert (quality.UNPAIRED_PAUSES_LONG_FROM / "generator.ckpt").is_file()


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
    monkeypatch.setattr("upcycle_se.models.runtime.cpu_has_bf16", lambda: True)  # `session` stays as it ran: fp32
    session = quality.train_command(quality.BUDGETS["session"], quality.SYSTEMS["paired_l1_base"], tmp_path, tmp_path)
    assert not any(c.startswith("--precision") for c in session)

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
    assert set(state["rows"]) == {"noisy", "spectral_subtraction", "wiener", "mmse_lsa", "paired"}
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
