"""``recipes/VoiceBankDEMAND/hparams/upcycle_unpaired_plus.yaml``: the unpaired recipe with the extensions the
shipped ``unpaired`` model was trained with in its last stage, in one file."""
from __future__ import annotations

from pathlib import Path

import pytest
import speechbrain as sb
import torch
import yaml

from upcycle_se.brain import UpCycleBrain
from upcycle_se.inference import packaged_model_dir
from upcycle_se.losses import LossConfig
from upcycle_se.models import MultiScaleDiscriminator, UpCycleGenerator
from upcycle_se.recipe import load_hparams

from tests.brain_step import training_batch

REPO = Path(__file__).resolve().parents[2]
PLUS = REPO / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle_unpaired_plus.yaml"


def plus_hparams(tmp_path: Path, **overrides) -> dict:
    return load_hparams(str(PLUS), {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"),
                                    "n_jobs": 1, **overrides})


def test_the_file_builds_the_shipped_unpaired_setting(tmp_path):
    hp = plus_hparams(tmp_path)
    gen, c2n = hp["modules"]["gen_n2c"], hp["modules"]["gen_c2n"]
    assert isinstance(gen, UpCycleGenerator) and isinstance(c2n, UpCycleGenerator)
    assert sum(p.numel() for p in gen.parameters()) == 1_785_794  # redesign_base, as the shipped model
    assert (gen.mode, gen.mask_type, c2n.mode) == ("mask", "complex", "map")
    disc = hp["modules"]["disc_clean"]
    assert isinstance(disc, MultiScaleDiscriminator) and len(disc.discriminators) == 1
    assert (hp["unpaired"], hp["crop_samples"], hp["batch_size"], hp["lr"], hp["lr_policy"]) == \
        ("shuffle", 16000, 4, 5e-4, "linear")
    assert (hp["max_grad_norm"], hp["ema_decay"]) == (10.0, 0.998)
    loss = LossConfig.from_hparams(dict(hp["loss"]))
    assert (loss.loss_type, loss.remix_weight, list(loss.remix_snr), loss.remix_noise) == \
        ("gan", 40.0, [-5, 20], "pauses")
    assert (loss.noisy_cycle_scale, loss.identity_decay_steps, loss.spectral_compress) == (0.0, 600, 1.0)
    assert (loss.adversarial_weight, loss.cycle_weight, loss.identity_weight) == (1.0, 20.0, 10.0)


def test_the_file_has_the_settings_of_the_budget_that_made_the_shipped_model(tmp_path):
    """Every override of the `unpaired_pauses_long` budget's shipped system is the file's value, but the
    starting point (init_from, with the identity weight it had spent) and the checkpoint interval."""
    from benchmarks.quality import BUDGETS, SYSTEMS

    budget, system = BUDGETS["unpaired_pauses_long"], SYSTEMS["unpaired_pauses40_base_ft"]
    hp = plus_hparams(tmp_path)
    overrides = {**budget.extra, **system.extra}
    for key in ("init_from", "identity_decay_steps", "ckpt_interval_minutes"):
        overrides.pop(key)
    assert overrides.pop("generator_preset") == "base" and hp["generator_preset"] == "redesign_base"  # alias
    for key, value in overrides.items():
        assert hp[key] == yaml.safe_load(value), key
    assert (budget.lr, budget.batch_size, budget.crop_samples) == (hp["lr"], hp["batch_size"], hp["crop_samples"])
    assert (budget.n_epochs, budget.n_epochs_decay) == (hp["n_epochs"], hp["n_epochs_decay"])
    assert (system.unpaired, system.loss_type, system.mask_type) == (hp["unpaired"], hp["loss_type"], hp["mask_type"])


def test_the_shipped_unpaired_generator_fits_and_a_training_step_runs(tmp_path):
    hp = plus_hparams(tmp_path)
    shipped = packaged_model_dir("unpaired") / "generator.ckpt"
    if not shipped.is_file():
        pytest.skip("the packaged unpaired model is not in this checkout")
    hp["modules"]["gen_n2c"].load_state_dict(torch.load(shipped, map_location="cpu"), strict=True)  # --init_from
    brain = UpCycleBrain(modules=hp["modules"], hparams=hp, run_opts={"device": "cpu"},
                         checkpointer=hp["checkpointer"])
    brain.on_fit_start()
    assert "gen_n2c_ema" in brain.modules
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    loss = brain.fit_batch(training_batch(0))
    assert torch.isfinite(loss) and brain.optimizer_step == 1
    assert {"g_adv", "cycle", "identity", "remix", "d_adv"} <= set(brain.epoch_terms)
