"""``benchmarks/identity_probe.py``: how far a run's generators are from the identity, on exact cases."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from benchmarks import identity_probe
from upcycle_se.errors import UserError
from upcycle_se.models import UpCycleGenerator


def _scaler(scale: float) -> UpCycleGenerator:
    """A generator that multiplies its input by ``scale`` (mask head zero but for its real bias, so
    M = atanh(scale))."""
    gen = UpCycleGenerator.from_preset("small", mode="mask")
    with torch.no_grad():
        for p in gen.head.parameters():
            p.zero_()
        gen.head.bias_real.fill_(math.atanh(scale))
    return gen


def _fake_run(root: Path, scale: float, recorded: bool) -> Path:
    """A run folder whose best checkpoint holds an enhancer that multiplies its input by ``scale`` and a
    clean->noisy generator: ``recorded`` in model_config.json (an identity one), or, as in runs from before
    that, only implied by hyperparams.yaml (an untrained ``map`` one)."""
    n2c = _scaler(scale)
    c2n = _scaler(0.999999) if recorded else UpCycleGenerator.from_preset("small", mode="map")
    save = root / "save"
    other = UpCycleGenerator.from_preset("small")
    # saved as the recipe saves them; the pesq 1.5 one (the best) holds the generators above
    Checkpointer(save, {"gen_n2c": other, "gen_c2n": c2n}).save_checkpoint(meta={"pesq": 1.2})
    Checkpointer(save, {"gen_n2c": n2c, "gen_c2n": c2n}).save_checkpoint(meta={"pesq": 1.5})
    configs = {"gen_n2c": n2c.config, "sample_rate": 16000}
    if recorded:  # as the recipe writes it now
        configs["gen_c2n"] = c2n.config
    else:  # a run from before that: a cycle-GAN run (not loss_type l1) trained a map clean->noisy generator
        (root / "hyperparams.yaml").write_text("loss_type: gan\n")
    (save / "model_config.json").write_text(json.dumps(configs))
    return root


def test_probe_measures_change_snr_gain_and_what_the_clean_to_noisy_generator_adds(tiny_corpus, tmp_path):
    pairs = identity_probe.test_pairs(tiny_corpus, limit=3)
    assert len(pairs) == 3 and all(c.is_file() for _, c in pairs)
    # an enhancer that halves its input: change = 0.5 ||x|| / ||x - s|| per file, exactly (to STFT rounding)
    half = identity_probe.probe(_fake_run(tmp_path / "half", 0.5, recorded=True), pairs)
    from upcycle_se.audio import read_audio

    expected = []
    for noisy, clean in pairs:
        x, s = read_audio(noisy)[0].flatten(), read_audio(clean)[0].flatten()
        expected.append(0.5 * float(x.norm() / (x - s).norm()))
    assert half["change"]["mean"] == pytest.approx(sum(expected) / 3, rel=1e-3)
    assert half["change"]["n"] == 3
    # an identity clean->noisy generator adds nothing (> 60 dB)
    assert half["c2n_snr"]["mean"] > 60
    # a pass-through enhancer (scale ~1) changes nothing and gains nothing; the paper's map c2n starts far away
    same = identity_probe.probe(_fake_run(tmp_path / "same", 0.999999, recorded=False), pairs)
    assert same["change"]["mean"] < 0.01 and abs(same["snr_gain"]["mean"]) < 0.05
    assert same["c2n_snr"]["mean"] < 10


def test_a_run_without_scored_checkpoints_is_one_line(tmp_path):
    Checkpointer(tmp_path / "save", {"gen_n2c": UpCycleGenerator.from_preset("small")}).save_checkpoint(
        end_of_epoch=False)  # an intra-epoch checkpoint: no validation score
    with pytest.raises(UserError, match="no checkpoint records a numeric 'pesq'") as err:
        identity_probe.load_generators(tmp_path)
    assert "\n" not in str(err.value)
