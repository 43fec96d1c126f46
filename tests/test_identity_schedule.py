"""The opt-in identity-weight decay and noisy-cycle scale inside the real training step of :class:`UpCycleBrain`."""
from __future__ import annotations

import pytest
import speechbrain as sb
import torch
from brain_step import small_brain, training_batch


@pytest.mark.parametrize("decay_steps", [0, 2])
def test_identity_term_follows_the_schedule_one_count_per_step(tmp_path, decay_steps):
    """Paper default: identity in every step. Decay over 2 updates: weight 10, 5, then 0, and the step
    skips the identity passes; ``optimizer_step`` counts training steps."""
    brain = small_brain(tmp_path, identity_decay_steps=decay_steps)
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    calls = []
    brain.modules["gen_n2c"].register_forward_hook(lambda *_: calls.append(1))
    weights, passes = [], []
    for seed in range(3):
        weights.append(brain.loss_cfg.identity_weight_at(brain.optimizer_step))
        calls.clear()
        brain.fit_batch(training_batch(seed))
        passes.append(len(calls))
    assert brain.optimizer_step == 3
    assert weights == ([10.0] * 3 if decay_steps == 0 else [10.0, 5.0, 0.0])
    # noisy->clean passes per step: enhance + cycle (clean->noisy->clean) + identity (clean) when weighted
    assert passes == [3 if w > 0 else 2 for w in weights]


@pytest.mark.parametrize("scale", [1.0, 0.25, 0.0])
def test_noisy_cycle_scale_weights_the_noisy_side_and_skips_its_pass_at_zero(tmp_path, scale):
    """The cycle term is |n2c(c2n(clean)) - clean| + scale * |c2n(n2c(noisy)) - noisy|, recomputed here
    from the same modules; at scale 0 the step makes one clean->noisy pass fewer."""
    brain = small_brain(tmp_path, noisy_cycle_scale=scale)
    brain.modules.eval()  # BatchNorm in eval: the recomputation below sees the same function
    batch = training_batch(0)
    noisy, lens = batch.noisy_sig
    clean, _ = batch.clean_sig
    calls = []
    brain.modules["gen_c2n"].register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        _, terms, fake_clean, fake_noisy = brain._generator_loss(noisy, clean, lens, lens)
        m = brain.modules
        clean_side = (m["gen_n2c"](fake_noisy) - clean).abs().mean()
        noisy_side = (m["gen_c2n"](fake_clean) - noisy).abs().mean()
    assert brain.loss_cfg.noisy_cycle_scale == scale
    assert float(noisy_side) > 0.01 and float(clean_side) > 0.01
    assert float(terms["cycle"]) == pytest.approx(float(clean_side + scale * noisy_side), rel=1e-5)
    # clean->noisy passes in the step: fake noisy + identity (noisy), + the noisy-side cycle unless scale 0
    assert len(calls) - 1 == (3 if scale > 0 else 2)


@pytest.mark.parametrize("weight", [0.0, 20.0])
def test_remix_term_is_the_supervised_l1_on_remixed_pseudo_pairs(tmp_path, weight):
    """With remix_weight > 0 the step adds |n2c(remix) - clean| (waveform + spectral L1), recomputed here from
    the same modules on :func:`remix_pseudo_noisy` of the step's own enhanced output, at the cost of one more
    noisy->clean pass; the total grows by exactly remix_weight times it. Off by default: no term, no pass."""
    from upcycle_se.losses import remix_pseudo_noisy, spectral_l1

    brain = small_brain(tmp_path, remix_weight=weight)
    brain.modules.eval()
    batch = training_batch(0)
    noisy, lens = batch.noisy_sig
    clean, _ = batch.clean_sig
    calls = []
    brain.modules["gen_n2c"].register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        total, terms, fake_clean, _ = brain._generator_loss(noisy, clean, lens, lens)
        passes = len(calls)
        n2c = brain.modules["gen_n2c"]
        remixed, remixed_spec = n2c(remix_pseudo_noisy(noisy, fake_clean, clean), return_spec=True)
        expected = (remixed - clean).abs().mean() + spectral_l1(remixed_spec, n2c.stft.stft(clean))
    cfg = brain.loss_cfg
    without = cfg.adversarial_weight * terms["g_adv"] + cfg.cycle_weight * terms["cycle"] \
        + cfg.identity_weight * terms["identity"]
    # noisy->clean passes: enhance + cycle + identity, + the remixed input when on
    assert passes == (4 if weight > 0 else 3)
    if weight == 0:
        assert "remix" not in terms
        assert float(total) == pytest.approx(float(without), rel=1e-5)
        return
    assert float(expected) > 0.01
    assert float(terms["remix"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(total) == pytest.approx(float(without + weight * expected), rel=1e-5)


def test_remix_from_pauses_reaches_the_training_step(tmp_path):
    """remix_noise=pauses: the step's remix term is the supervised L1 on clean speech plus noise mined from
    the noisy crops' pauses, recomputed here with the same random draws."""
    from upcycle_se.losses import remix_pseudo_noisy, spectral_l1

    brain = small_brain(tmp_path, remix_weight=20.0, remix_noise="pauses", remix_snr=[0, 0])
    assert brain.loss_cfg.remix_noise == "pauses"
    brain.modules.eval()
    batch = training_batch(0)
    noisy, lens = batch.noisy_sig
    clean, _ = batch.clean_sig
    with torch.no_grad():
        torch.manual_seed(3)
        _, terms, fake_clean, _ = brain._generator_loss(noisy, clean, lens, lens)
        torch.manual_seed(3)
        brain.loss_cfg.remix_snr_draw(2)  # the step draws its SNRs first
        pseudo = remix_pseudo_noisy(noisy, fake_clean, clean, snr_db=torch.zeros(2), noise_source="pauses")
        n2c = brain.modules["gen_n2c"]
        remixed, remixed_spec = n2c(pseudo, return_spec=True)
        expected = (remixed - clean).abs().mean() + spectral_l1(remixed_spec, n2c.stft.stft(clean))
    assert float(terms["remix"]) == pytest.approx(float(expected), rel=1e-5)
    # at 0 dB the added noise has the clean crops' power
    added = pseudo - clean
    torch.testing.assert_close(added.pow(2).mean(-1), clean.pow(2).mean(-1), rtol=1e-4, atol=0)
