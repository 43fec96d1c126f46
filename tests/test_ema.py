"""The opt-in weight average of the noisy->clean generator (``ema_decay``) inside the real training step of
:class:`UpCycleBrain`."""
from __future__ import annotations

import pytest
import speechbrain as sb
import torch
from brain_step import small_brain, training_batch

from upcycle_se.errors import ConfigError


def _weights(module: torch.nn.Module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def test_off_by_default_as_in_the_paper(tmp_path):
    brain = small_brain(tmp_path)
    assert "gen_n2c_ema" not in brain.modules
    assert brain._enhancer(sb.Stage.VALID) is brain.modules["gen_n2c"]


def test_average_follows_every_generator_step_and_serves_validation(tmp_path):
    """decay 0.75: the first update copies the weights (AveragedModel), each later one moves a quarter of the
    way; validation and test enhance with the average, training with the raw generator; the average is a
    checkpointed module that no optimizer sees."""
    brain = small_brain(tmp_path, ema_decay=0.75)
    gen, ema = brain.modules["gen_n2c"], brain.modules["gen_n2c_ema"]
    assert "gen_n2c_ema" in brain.checkpointer.recoverables
    assert not any(p.requires_grad for p in ema.parameters())
    optimized = {id(p) for g in brain.g_optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in ema.parameters()}

    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    seen = []
    for seed in range(3):
        brain.fit_batch(training_batch(seed))
        seen.append(_weights(gen))
    expected = seen[0]
    for w in seen[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * w[k] for k in expected}
    averaged = {k[len("module."):]: v for k, v in _weights(ema).items() if k.startswith("module.")}
    assert set(averaged) == set(expected)
    key = next(k for k in expected if "weight_real" in k and expected[k].numel() > 100)
    assert float((seen[2][key] - seen[0][key]).abs().max()) > 1e-4  # the generator did move
    for k in expected:
        torch.testing.assert_close(averaged[k], expected[k], rtol=1e-5, atol=1e-7)
    assert int(ema.n_averaged) == 3

    brain.modules.eval()
    batch = training_batch(9)
    noisy, _ = batch.noisy_sig
    with torch.no_grad():
        out_valid, _ = brain.compute_forward(batch, sb.Stage.VALID)
        out_train, _ = brain.compute_forward(batch, sb.Stage.TRAIN)
        torch.testing.assert_close(out_valid, ema.module(noisy))
        torch.testing.assert_close(out_train, gen(noisy))
    assert float((out_valid - out_train).abs().max()) > 1e-6


def test_the_average_never_runs_in_training(tmp_path):
    """The remix term takes its noise from the generator being trained: the average is not run in a training
    step (it is updated after it)."""
    brain = small_brain(tmp_path, ema_decay=0.9, remix_weight=20.0)
    ema = brain.modules["gen_n2c_ema"]
    calls = []
    ema.module.register_forward_hook(lambda mod, *_: calls.append(mod.training))
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.fit_batch(training_batch(0))
    assert calls == []
    assert "remix" in brain.epoch_terms and int(ema.n_averaged) == 1


@pytest.mark.parametrize("overrides, message", [
    ({"ema_decay": 1.0}, "ema_decay=1.0 must be in [0, 1) (0: off, the paper; e.g. 0.999)"),
])
def test_bad_settings_are_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        small_brain(tmp_path, **overrides)
    assert str(err.value) == message


def test_a_run_resumes_only_with_the_average_kept_as_before(tmp_path):
    """Turning the average on or off between an interrupted run and its rerun is refused in one line,
    instead of SpeechBrain's missing-file error or a silently dropped average."""
    brain = small_brain(tmp_path / "a", ema_decay=0.9)
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    for seed in range(2):
        brain.fit_batch(training_batch(seed))
    saved = _weights(brain.modules["gen_n2c_ema"])
    brain.checkpointer.save_checkpoint()
    resumed = _weights(small_brain(tmp_path / "a", ema_decay=0.9).modules["gen_n2c_ema"])  # same setting resumes
    fresh = _weights(small_brain(tmp_path / "c", ema_decay=0.9).modules["gen_n2c_ema"])
    assert max(float((saved[k] - fresh[k]).abs().max()) for k in saved) > 1e-4
    for k in saved:
        torch.testing.assert_close(resumed[k], saved[k])
    with pytest.raises(ConfigError, match=r"trained with ema_decay > 0; resume it with the same ema_decay"):
        small_brain(tmp_path / "a")
    plain = small_brain(tmp_path / "b")
    plain.checkpointer.save_checkpoint()
    with pytest.raises(ConfigError, match=r"trained without ema_decay; resume it with ema_decay=0"):
        small_brain(tmp_path / "b", ema_decay=0.9)
