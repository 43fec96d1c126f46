"""Loss functions and LR policies against hand-computed values."""
import math

import pytest
import torch

from upcycle_se.errors import ConfigError
from upcycle_se.losses import (AdversarialLoss, LossConfig, compress_spectrum, masked_mean, remix_pseudo_noisy,
                               spectral_l1, waveform_l1)
from upcycle_se.lr_policy import EpochLRPolicy


def test_lsgan_values():
    adv = AdversarialLoss()
    real = torch.full((2, 1, 4), 0.5)
    fake = torch.full((2, 1, 4), 0.25)
    # 0.5 * ((0.5-1)^2 + 0.25^2) = 0.5 * (0.25 + 0.0625)
    assert adv.discriminator_loss(real, fake).item() == pytest.approx(0.15625)
    assert adv.generator_loss(fake).item() == pytest.approx(0.5625)


def test_multiscale_lists_average():
    adv = AdversarialLoss()
    maps = [torch.zeros(1, 1, 4), torch.ones(1, 1, 2)]
    # generator: mean of (0-1)^2 = 1 and (1-1)^2 = 0
    assert adv.generator_loss(maps).item() == pytest.approx(0.5)


def test_unknown_loss_type_and_options_refused():
    with pytest.raises(ConfigError, match="loss_type 'l2gan'"):
        LossConfig(loss_type="l2gan")
    with pytest.raises(ConfigError, match="unknown loss option"):
        LossConfig.from_hparams({"cycle_wieght": 3})
    with pytest.raises(ConfigError, match=r"unknown loss option\(s\) \['gan_mode'\]"):  # LSGAN only
        LossConfig.from_hparams({"gan_mode": "hinge"})
    with pytest.raises(ConfigError, match="must be a number >= 0"):
        LossConfig(cycle_weight=-1)


def test_loss_types_switch_terms():
    gan, l1gan, l1 = (LossConfig(loss_type=t) for t in ("gan", "l1gan", "l1"))
    assert (gan.adversarial, gan.cycle, gan.supervised) == (True, True, False)
    assert (l1gan.adversarial, l1gan.cycle, l1gan.supervised) == (True, True, True)
    assert (l1.adversarial, l1.cycle, l1.supervised) == (False, False, True)


def test_masked_l1_ignores_padding():
    est = torch.tensor([[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 2.0, 2.0]])
    tgt = torch.zeros(2, 4)
    lens = torch.tensor([0.5, 1.0])
    # valid samples: 1,1 and 2,2,2,2 -> sum 10 over 6 samples
    assert waveform_l1(est, tgt, lens).item() == pytest.approx(10 / 6)
    assert masked_mean(est).item() == pytest.approx(est.mean().item())


def test_spectral_l1_zero_iff_equal_and_sees_phase():
    spec = torch.randn(2, 2, 5, 7)
    assert spectral_l1(spec, spec).item() == pytest.approx(0.0, abs=1e-6)
    # same magnitude, rotated phase: the magnitude term is 0 but the real/imag term is not
    rotated = torch.stack([-spec[:, 1], spec[:, 0]], dim=1)
    assert spectral_l1(rotated, spec).item() > 0.5


def test_lr_policies():
    lin = EpochLRPolicy("linear", n_epochs=70, n_epochs_decay=30)
    assert lin.factor(1) == 1.0 and lin.factor(70) == 1.0
    assert lin.factor(71) == pytest.approx(1 - 1 / 31)
    assert lin.factor(100) == pytest.approx(1 - 30 / 31)
    cos = EpochLRPolicy("cosine", n_epochs=70, n_epochs_decay=30)
    assert cos.factor(1) == 1.0
    assert cos.factor(51) == pytest.approx(0.5)
    assert all(cos.factor(e) > cos.factor(e + 1) for e in range(1, 100))
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert lin.apply([opt], 2e-4, 100) == pytest.approx(2e-4 / 31)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 / 31)
    with pytest.raises(ConfigError, match="lr_policy 'step'"):
        EpochLRPolicy("step")


def test_identity_weight_is_constant_by_default_and_decays_linearly_when_asked():
    paper = LossConfig()
    assert [paper.identity_weight_at(s) for s in (0, 100, 10 ** 6)] == [10.0, 10.0, 10.0]
    decayed = LossConfig(identity_weight=10.0, identity_decay_steps=200)
    assert [decayed.identity_weight_at(s) for s in (0, 50, 100, 199, 200, 5000)] == pytest.approx(
        [10.0, 7.5, 5.0, 0.05, 0.0, 0.0])
    for bad in (-1, 2.5, "100", True):
        with pytest.raises(ConfigError, match=r"identity_decay_steps=.* must be an integer >= 0"):
            LossConfig(identity_decay_steps=bad)


def test_noisy_cycle_scale_defaults_to_the_papers_symmetric_cycle_and_refuses_out_of_range():
    assert LossConfig().noisy_cycle_scale == 1.0
    assert LossConfig(noisy_cycle_scale=0.0).noisy_cycle_scale == 0.0
    for bad in (-0.5, 1.5):
        with pytest.raises(ConfigError, match=r"noisy_cycle_scale=.* must be"):
            LossConfig(noisy_cycle_scale=bad)


def test_compressed_spectrum_keeps_phase_and_raises_magnitude_to_the_power():
    spec = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.01]]]])  # [1, 2, 1, 2]: bins 3+4j (|5|) and 0.01j
    assert torch.equal(compress_spectrum(spec, 1.0), spec)
    out = compress_spectrum(spec, 0.3)
    mag = out.pow(2).sum(1).sqrt()[0, 0]
    assert mag[0] == pytest.approx(5 ** 0.3, rel=1e-5) and mag[1] == pytest.approx(0.01 ** 0.3, rel=1e-3)
    assert out[0, 0, 0, 0] / out[0, 1, 0, 0] == pytest.approx(3 / 4)  # same angle
    # The quiet bin's error counts ~6x more once compressed: 0.01 -> 0.02 is 0.01 linear, 0.0585 compressed.
    # Each loss is 3/4 of that: 1/4 (one of four real/imaginary values) + 1/2 (one of two magnitudes).
    quiet = spec.clone()
    quiet[0, 1, 0, 1] = 0.02
    assert float(spectral_l1(quiet, spec)) == pytest.approx(0.75 * 0.01, rel=1e-3)
    assert float(spectral_l1(quiet, spec, 0.3)) == pytest.approx(0.75 * (0.02 ** 0.3 - 0.01 ** 0.3), rel=1e-3)


@pytest.mark.parametrize("power", [0.0, -0.3, 1.5])
def test_spectral_compress_outside_0_1_is_refused(power):
    with pytest.raises(ConfigError, match=f"spectral_compress={power}"):
        LossConfig(spectral_compress=power)


def test_remix_pseudo_noisy_carries_the_estimated_noise_at_the_estimated_snr():
    """An oracle enhancer (output = the speech of the noisy crop) gives back the true noise; remixed onto a
    clean crop twice as loud as that speech, the noise is doubled, so the pseudo-noisy SNR equals the noisy one."""
    gen = torch.Generator().manual_seed(0)
    speech, noise = 0.1 * torch.randn(2, 800, generator=gen), 0.05 * torch.randn(2, 800, generator=gen)
    clean = torch.randn(2, 800, generator=gen)
    clean = clean * (2 * speech.pow(2).mean(-1, keepdim=True).sqrt() / clean.pow(2).mean(-1, keepdim=True).sqrt())
    pseudo = remix_pseudo_noisy(speech + noise, speech, clean)
    torch.testing.assert_close(pseudo - clean, 2.0 * noise, rtol=1e-5, atol=1e-6)

    def snr(s, n):
        return float(10 * torch.log10(s.pow(2).sum() / n.pow(2).sum()))

    assert snr(clean[0], pseudo[0] - clean[0]) == pytest.approx(snr(speech[0], noise[0]), abs=1e-4)


def test_remix_pseudo_noisy_bounds_the_gain_and_respects_lengths():
    """A crop the enhancer silenced has gain max_gain (100), not infinity; the noise is cut to the clean
    crop's length and zero in its padding and beyond the noisy crop's valid samples."""
    noisy = torch.ones(1, 10)
    pseudo = remix_pseudo_noisy(noisy, torch.zeros(1, 10), torch.full((1, 6), 0.5))
    torch.testing.assert_close(pseudo, torch.full((1, 6), 0.5 + 100.0))
    # noisy valid for 4 of 10 samples, clean valid for 3 of 6; enhanced = half the noisy crop
    pseudo = remix_pseudo_noisy(noisy, 0.5 * noisy, torch.ones(1, 6), torch.tensor([0.4]), torch.tensor([0.5]))
    # gain rms(clean valid = 1) / rms(enhanced valid = 0.5) = 2: noise 0.5 -> 1.0 on the first 3 samples
    torch.testing.assert_close(pseudo, torch.tensor([[2.0, 2.0, 2.0, 1.0, 1.0, 1.0]]))


def test_remix_weight_defaults_to_off_and_refuses_negative():
    assert LossConfig().remix_weight == 0.0
    with pytest.raises(ConfigError, match=r"remix_weight=-1.*must be a number >= 0"):
        LossConfig(remix_weight=-1.0)


def test_remix_pseudo_noisy_at_given_snrs_takes_only_the_noise_shape():
    """With snr_db given, each pseudo-noisy item has exactly that SNR against its clean crop, whatever the
    level of the noise estimate (here an enhancer that removed a tenth of the noise)."""
    gen = torch.Generator().manual_seed(1)
    speech, noise = 0.1 * torch.randn(3, 800, generator=gen), 0.05 * torch.randn(3, 800, generator=gen)
    clean = 0.2 * torch.randn(3, 800, generator=gen)
    enhanced = speech + 0.9 * noise
    pseudo = remix_pseudo_noisy(speech + noise, enhanced, clean, snr_db=torch.tensor([-5.0, 0.0, 12.5]))
    added = pseudo - clean
    snrs = 10 * torch.log10(clean.pow(2).sum(-1) / added.pow(2).sum(-1))
    torch.testing.assert_close(snrs, torch.tensor([-5.0, 0.0, 12.5]), atol=1e-4, rtol=0)
    scale = (added * noise).sum(-1, keepdim=True) / noise.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(added, scale * noise, rtol=1e-4, atol=1e-6)  # the true noise's shape, scaled


def test_remix_snr_is_estimated_or_a_range_and_draws_within_it():
    assert LossConfig().remix_snr == "estimated" and LossConfig().remix_snr_draw(4) is None
    torch.manual_seed(0)
    draws = LossConfig(remix_snr=[-5, 20]).remix_snr_draw(1000)
    assert draws.shape == (1000,) and -5 <= float(draws.min()) < -4 and 19 < float(draws.max()) <= 20
    for bad in ("fixed", [20, -5], [0], [0, "a"]):
        with pytest.raises(ConfigError, match=r"remix_snr=.* must be 'estimated' or \[low, high\]"):
            LossConfig(remix_snr=bad)


def _tone_over_noise(seed: int = 0, n: int = 16000):
    """A loud 440 Hz tone in the first half over weak white noise throughout: ``(noisy, tone, noise)``."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t) * (t < 0.5)
    noise = 0.02 * torch.randn(n, generator=gen)
    return (tone + noise)[None], tone[None], noise[None]


def _tone_share(x: torch.Tensor) -> float:
    """Share of ``x [1, time]``'s energy within 20 Hz of 440 Hz."""
    power = torch.fft.rfft(x[0]).abs() ** 2
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / 16000)
    return float(power[(freqs - 440).abs() < 20].sum() / power.sum())


def test_pause_noise_takes_the_quietest_frames_at_a_constant_power():
    from upcycle_se.losses import pause_noise

    noisy, tone, noise = _tone_over_noise()
    assert _tone_share(noisy) > 0.95
    mined = pause_noise(noisy, 24000, generator=torch.Generator().manual_seed(1))
    assert mined.shape == (1, 24000)
    assert _tone_share(mined) < 0.01  # the tone half is never drawn; what is left is the white noise
    # sqrt-Hann overlap-add of independent noise windows: the power stays the noise's, in every stretch
    rms = mined.reshape(6, 4000).pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full((6,), 0.02), rtol=0.1)


def test_pause_noise_never_draws_the_padding():
    """Zero padding past ``noisy_lens`` is the quietest stretch of all; it must not be taken for a pause."""
    from upcycle_se.losses import pause_noise

    _, _, noise = _tone_over_noise()
    padded = torch.cat([noise, torch.zeros(1, 16000)], -1)
    mined = pause_noise(padded, 16000, torch.tensor([0.5]), generator=torch.Generator().manual_seed(0))
    assert float(mined[:, 1024:-1024].pow(2).mean().sqrt()) == pytest.approx(0.02, rel=0.1)
    short = pause_noise(noise[:, :300], 2000)  # shorter than one window: its only window is used
    assert float(short.abs().max()) > 0


def test_remix_from_pauses_at_given_snrs():
    """noise_source=pauses: clean speech plus mined noise, at exactly the SNR asked for; the enhancer's
    output is not used (an enhancer that kept all the speech or none gives the same pseudo-pair)."""
    noisy, tone, _ = _tone_over_noise()
    clean = 0.3 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(5))
    pairs = []
    for enhanced in (tone, torch.zeros_like(tone)):
        torch.manual_seed(7)
        pairs.append(remix_pseudo_noisy(noisy, enhanced, clean, snr_db=torch.tensor([5.0]), noise_source="pauses"))
    torch.testing.assert_close(pairs[0], pairs[1])
    added = pairs[0] - clean
    assert 10 * math.log10(float(clean.pow(2).mean() / added.pow(2).mean())) == pytest.approx(5.0, abs=1e-3)
    assert _tone_share(added) < 0.01
    with pytest.raises(ConfigError, match="noise_source='vad' must be one of estimate, pauses"):
        remix_pseudo_noisy(noisy, tone, clean, noise_source="vad")
    with pytest.raises(ConfigError, match="remix_noise='vad' must be one of estimate, pauses"):
        LossConfig(remix_noise="vad")
