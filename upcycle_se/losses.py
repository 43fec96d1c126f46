"""Losses of Up-Cycle-SENet's cycle-GAN.

- The adversarial loss (:class:`AdversarialLoss`): least squares (LSGAN, Mao et al. 2017), as in CycleGAN
  and the paper. It takes a discriminator output that is either one score map ``[batch, 1, frames]`` or a
  list of them (multi-scale discriminator); the loss is averaged over the maps.
- :func:`waveform_l1` and :func:`spectral_l1`: the L1 distances used for cycle consistency, identity and,
  in paired training, supervision ("l1gan": supervised L1 on top of the GAN losses).
- Opt-in supervised term beyond the paper: :func:`si_sdr_loss` (SI-SDR, Le Roux et al. 2019).

The weights and which terms are on live in :class:`LossConfig`, built from the hparams by
:func:`LossConfig.from_hparams`, which refuses unknown names instead of silently ignoring them (the
paper's code accepted any ``loss_type`` and always trained the same loss).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from upcycle_se.errors import ConfigError

ScoreMaps = Union[torch.Tensor, Sequence[torch.Tensor]]

#: Which groups of terms the generators are trained with.
#: ``gan``: adversarial + cycle + identity (unpaired); ``l1gan``: ``gan`` + supervised L1 (paired);
#: ``l1``: supervised L1 only (paired, no discriminator).
LOSS_TYPES = ("gan", "l1gan", "l1")


def _as_list(scores: ScoreMaps) -> List[torch.Tensor]:
    return [scores] if isinstance(scores, torch.Tensor) else list(scores)


class AdversarialLoss:
    """Discriminator and generator sides of the least-squares GAN objective (LSGAN).

    Example
    -------
    >>> adv = AdversarialLoss()
    >>> real, fake = torch.ones(2, 1, 5), torch.zeros(2, 1, 5)
    >>> float(adv.discriminator_loss(real, fake)), float(adv.generator_loss(fake))
    (0.0, 1.0)
    """

    def discriminator_loss(self, real: ScoreMaps, fake: ScoreMaps) -> torch.Tensor:
        """Loss of a discriminator that should score ``real`` 1 and ``fake`` 0."""
        real, fake = _as_list(real), _as_list(fake)
        total = 0.0
        for r, f in zip(real, fake):
            # 0.5 so that D and G losses share CycleGAN's scale
            total = total + 0.5 * (((r - 1) ** 2).mean() + (f ** 2).mean())
        return total / len(real)

    def generator_loss(self, fake: ScoreMaps) -> torch.Tensor:
        """Loss of a generator whose outputs the discriminator scored as ``fake``."""
        fake = _as_list(fake)
        total = 0.0
        for f in fake:
            total = total + ((f - 1) ** 2).mean()
        return total / len(fake)


def valid_mask(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[batch, time]`` mask (``values``' dtype) of the valid samples of ``values [batch, time]`` given
    relative ``lengths [batch]``, as SpeechBrain's padded batches give them."""
    time = values.shape[-1]
    mask = torch.arange(time, device=values.device)[None, :] < (lengths * time).round()[:, None]
    return mask.to(values.dtype)


def masked_mean(values: torch.Tensor, lengths: torch.Tensor = None) -> torch.Tensor:
    """Mean of ``values [batch, time]`` over the valid samples given relative ``lengths [batch]``."""
    if lengths is None:
        return values.mean()
    mask = valid_mask(values, lengths)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def waveform_l1(estimate: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor = None) -> torch.Tensor:
    """Mean absolute error of waveforms ``[batch, time]`` (padding excluded when ``lengths`` is given)."""
    return masked_mean((estimate - target).abs(), lengths)


def compress_spectrum(spec: torch.Tensor, power: float) -> torch.Tensor:
    """``spec [batch, 2, freq, frames]`` (real, imaginary) with its magnitude raised to ``power``, phase kept.

    ``power < 1`` (e.g. 0.3) lifts the low-energy bins, where residual noise between and under speech
    lives, towards the loud ones (power-law compression, Braun & Tashev 2021); ``power = 1`` returns it as is.
    """
    if power == 1.0:
        return spec
    mag = torch.sqrt(spec.pow(2).sum(1, keepdim=True) + 1e-8)
    return spec * mag.pow(power - 1.0)


def spectral_l1(estimate_spec: torch.Tensor, target_spec: torch.Tensor, compress: float = 1.0) -> torch.Tensor:
    """Mean absolute error of complex spectra ``[batch, 2, freq, frames]`` plus that of their magnitudes.

    The real/imaginary term carries phase; the magnitude term keeps low-energy bins from being ignored.
    ``compress < 1`` compares power-law compressed spectra (see :func:`compress_spectrum`); 1: the paper's.
    """
    estimate_spec = compress_spectrum(estimate_spec, compress)
    target_spec = compress_spectrum(target_spec, compress)
    mag_e = torch.sqrt(estimate_spec.pow(2).sum(1) + 1e-8)
    mag_t = torch.sqrt(target_spec.pow(2).sum(1) + 1e-8)
    return (estimate_spec - target_spec).abs().mean() + (mag_e - mag_t).abs().mean()


def si_sdr_loss(estimate: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor = None) -> torch.Tensor:
    """Negative scale-invariant SDR in dB (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019),
    averaged over a batch of waveforms ``[batch, time]``; padding beyond ``lengths`` is zeroed in both.

    Computed by SpeechBrain's :func:`speechbrain.nnet.losses.cal_si_snr` (zero-mean SI-SNR, the same quantity).
    Unlike the L1 terms it is blind to level: every file's error counts relative to its own speech power.
    """
    from speechbrain.nnet.losses import cal_si_snr

    if lengths is not None:
        mask = valid_mask(estimate, lengths)
        estimate, target = estimate * mask, target * mask
    # cal_si_snr takes [time, batch, sources] and returns -SI-SNR [1, batch, sources]
    return cal_si_snr(target.float().t().unsqueeze(-1), estimate.float().t().unsqueeze(-1)).mean()


#: Short-time frames SpeechBrain's STOI needs in a file after silent-frame removal (one 384 ms envelope).
STOI_MIN_FRAMES = 31


def _stoi_frames(target: torch.Tensor) -> int:
    """How many STOI frames of ``target [time]`` (16 kHz) SpeechBrain's ``stoi_loss`` keeps as not silent."""
    from speechbrain.nnet.loss.stoi_loss import removeSilentFrames

    from upcycle_se.audio import resample_audio  # torchaudio's, as SpeechBrain's stoi_loss resamples

    x = resample_audio(target, 16000, 10000)
    if x.shape[-1] < 256:
        return 0
    kept, _ = removeSilentFrames(x, x)
    return 0 if kept.shape[-1] < 256 else (kept.shape[-1] - 256) // 128 + 2


def stoi_loss_term(estimate: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor = None,
                   sample_rate: int = 16000) -> torch.Tensor:
    """Negative STOI, differentiable (Fu et al., "End-to-end waveform utterance enhancement for direct
    evaluation metrics optimization by fully convolutional neural networks", TASLP 2018), averaged over a
    batch of 16 kHz waveforms ``[batch, time]`` with relative ``lengths [batch]``; in [-1, 1], lower is better.

    Computed by SpeechBrain's :func:`speechbrain.nnet.loss.stoi_loss.stoi_loss`, which builds its tensors on
    the CPU: the batch is taken there in float32 and the loss returned on ``estimate``'s device (gradients
    flow through the copy). STOI needs one 384 ms envelope: items whose reference keeps fewer frames after
    SpeechBrain's silent-frame removal (under about 0.4 s within 40 dB of its loudest frame: a crop that is
    mostly pause) are left out, where SpeechBrain would fail; a batch of only such items gives 0.
    """
    from speechbrain.nnet.loss.stoi_loss import stoi_loss

    if int(sample_rate) != 16000:
        raise ConfigError(f"stoi_weight needs 16 kHz audio (SpeechBrain's stoi_loss), not {sample_rate} Hz")
    if lengths is None:
        lengths = torch.ones(estimate.shape[0], device=estimate.device)
    est, ref, lens = estimate.float().cpu(), target.float().cpu(), lengths.float().cpu()
    n = est.shape[-1]
    keep = [i for i in range(est.shape[0])
            if _stoi_frames(ref[i, : int(lens[i] * n)].detach()) >= STOI_MIN_FRAMES]
    if not keep:
        return estimate.sum() * 0.0
    with torch.autocast("cpu", enabled=False):  # its correlations in float32, whatever the training precision
        loss = stoi_loss(est[keep], ref[keep], lens[keep])
    return loss.to(estimate.device)


def _masked_rms(x: torch.Tensor, lengths: torch.Tensor = None) -> torch.Tensor:
    """Root mean square of each waveform of ``x [batch, time]`` over its valid samples -> ``[batch]``."""
    if lengths is None:
        return x.pow(2).mean(-1).sqrt()
    mask = valid_mask(x, lengths)
    return ((x.pow(2) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sqrt()


#: Hop of :func:`pause_noise`'s windows (16 ms at 16 kHz); the windows are twice as long
#: (``benchmarks/noise_estimate_probe.py`` compares window lengths and quantiles).
PAUSE_FRAME = 256
#: Share of each crop's windows that :func:`pause_noise` treats as pauses.
PAUSE_QUANTILE = 0.1


def pause_noise(noisy: torch.Tensor, length: int, noisy_lens: torch.Tensor = None, quantile: float = PAUSE_QUANTILE,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Noise mined from the pauses of noisy crops: their quietest frames, re-tiled to ``length`` samples
    (in the spirit of minimum-statistics noise estimation, Martin 2001).

    Each crop of ``noisy [batch, time]`` is cut into ``2 * PAUSE_FRAME`` windows at hop ``PAUSE_FRAME``; the
    windows whose energy is at most the ``quantile`` of that crop's (at least one; windows past
    ``noisy_lens`` never count) are where speech is most likely absent. Randomly drawn selected windows,
    square-root-Hann weighted, are overlap-added at the same hop: the weights are power-complementary, so
    the tiled noise keeps a constant power without clicks at the joins.

    Returns
    -------
    ``[batch, length]`` noise (no gradient).
    """
    with torch.no_grad():
        x = noisy.float()
        hop, win_len = PAUSE_FRAME, 2 * PAUSE_FRAME
        if x.shape[-1] < win_len:
            x = F.pad(x, (0, win_len - x.shape[-1]))
        frames = x.unfold(-1, win_len, hop)  # [batch, n_frames, win_len]
        energy = frames.pow(2).mean(-1)
        if noisy_lens is not None:  # a window reaching into the padding would look like silence
            valid_end = noisy_lens.to(x.device).float() * noisy.shape[-1]
            starts = torch.arange(frames.shape[1], device=x.device) * hop
            inside = starts[None, :] + win_len <= valid_end[:, None]
            inside[:, 0] = True  # a crop shorter than one window still offers its first
            energy = energy.masked_fill(~inside, float("inf"))
        n_valid = torch.isfinite(energy).sum(-1, keepdim=True).clamp(min=1)
        k = (quantile * n_valid).ceil().clamp(min=1).long()
        threshold = energy.sort(-1).values.gather(-1, k - 1)
        chosen = (energy <= threshold).float()
        n_out = length // hop + 2  # windows covering [-hop, length + hop)
        picks = torch.multinomial(chosen, n_out, replacement=True, generator=generator)
        window = torch.hann_window(win_len, periodic=True, device=x.device).sqrt()
        tiles = frames.gather(1, picks[..., None].expand(-1, -1, win_len)) * window  # [batch, n_out, win_len]
        total = (n_out - 1) * hop + win_len
        out = F.fold(tiles.transpose(1, 2), output_size=(1, total), kernel_size=(1, win_len), stride=(1, hop))
        return out.reshape(x.shape[0], total)[:, hop:hop + length]


def remix_pseudo_noisy(noisy: torch.Tensor, enhanced: torch.Tensor, clean: torch.Tensor,
                       noisy_lens: torch.Tensor = None, clean_lens: torch.Tensor = None,
                       snr_db: Optional[torch.Tensor] = None, max_gain: float = 100.0,
                       noise_source: str = "estimate") -> torch.Tensor:
    """Pseudo-noisy inputs for remixed supervision (``LossConfig.remix_weight``): clean crops plus the noise
    an enhancer estimated in unrelated noisy crops, at the SNR it estimated there or at given SNRs.

    Arguments
    ---------
    noisy, enhanced : ``[batch, time_n]`` noisy crops and the enhancer's output for them; their difference
        is the noise estimate (padding beyond ``noisy_lens`` counts as silence).
    clean : ``[batch, time_c]`` clean crops (unpaired: any speech of the clean pile).
    snr_db : ``[batch]`` SNRs to mix at; None keeps each item's estimated SNR,
        ``rms(enhanced) / rms(noise)``. An enhancer near the identity removes little, so its estimated SNRs
        are high; given SNRs take only the noise's shape from it.
    max_gain : bound on the level gain applied to the noise, so that a noisy crop the enhancer judged
        (nearly) speech-free, or a noise estimate near zero, yields a loud but finite noise.
    noise_source : ``estimate`` (the enhancer's, ``noisy - enhanced``) or ``pauses`` (:func:`pause_noise`:
        the noisy crop's quietest frames, re-tiled; no speech the enhancer failed to keep leaks into it).

    Returns
    -------
    ``[batch, time_c]``: ``clean + gain * noise``; the noise is cut or zero-padded to ``time_c`` and zero in
    the clean crop's padding. No gradient flows through it.
    """
    with torch.no_grad():
        noisy, enhanced, clean = noisy.float(), enhanced.float(), clean.float()
        if noise_source == "pauses":
            noise, noise_lens = pause_noise(noisy, noisy.shape[-1], noisy_lens), None
        elif noise_source == "estimate":
            noise, noise_lens = noisy - enhanced, noisy_lens
        else:
            raise ConfigError(f"noise_source={noise_source!r} must be one of {', '.join(REMIX_NOISE_SOURCES)}")
        if noise_lens is not None:
            noise = noise * valid_mask(noise, noise_lens)
        if snr_db is None:  # keep the noisy crop's estimated SNR, rms(enhanced) / rms(noise)
            gain = _masked_rms(clean, clean_lens) / _masked_rms(enhanced, noisy_lens).clamp(min=1e-8)
            if noise_source == "pauses":
                gain = gain * _masked_rms(noisy - enhanced, noisy_lens) / _masked_rms(noise).clamp(min=1e-8)
        else:
            gain = _masked_rms(clean, clean_lens) / (
                _masked_rms(noise, noise_lens).clamp(min=1e-8) * 10.0 ** (snr_db.float().to(noise.device) / 20))
        noise = noise * gain.clamp(1.0 / max_gain, max_gain)[:, None]
        t_c = clean.shape[-1]
        noise = F.pad(noise, (0, max(0, t_c - noise.shape[-1])))[:, :t_c]
        if clean_lens is not None:
            noise = noise * valid_mask(noise, clean_lens)
        return clean + noise


#: Where the remix term's noise comes from (``LossConfig.remix_noise``, :func:`remix_pseudo_noisy`).
REMIX_NOISE_SOURCES = ("estimate", "pauses")


@dataclass
class LossConfig:
    """Which loss terms are on and their weights (the ``loss`` section of the hparams).

    The defaults are the paper's (CycleGAN's weights); every opt-in field's default switches it off.

    - ``loss_type``: ``gan`` (adversarial + cycle + identity), ``l1gan`` (+ supervised L1), ``l1`` (supervised only).
    - ``adversarial_weight``, ``cycle_weight``, ``identity_weight``: weights of the cycle-GAN terms.
    - ``supervised_weight``, ``spectral_weight``: supervised L1 (waveform + ``spectral_weight`` x spectral).
    - ``identity_decay_steps``: opt-in; > 0 decays the identity weight linearly to 0 over that many updates.
    - ``spectral_compress``: opt-in; < 1 compares power-law compressed spectra (:func:`compress_spectrum`).
    - ``noisy_cycle_scale``: opt-in; < 1 scales down the noisy-side cycle term (0: clean-side cycle only).
    - ``remix_weight``: opt-in; > 0 adds a supervised L1 on remixed pseudo-pairs (:func:`remix_pseudo_noisy`).
    - ``remix_snr``: ``estimated`` (each noisy crop's estimated SNR) or ``[low, high]`` dB to draw from.
    - ``remix_noise``: ``estimate`` (``noisy - enhanced``) or ``pauses`` (:func:`pause_noise`).
    - ``sisdr_weight``: opt-in; > 0 adds ``sisdr_weight`` x :func:`si_sdr_loss` (dB) to the supervised term
      (Le Roux et al. 2019; paired loss types only).
    - ``stoi_weight``: opt-in; > 0 adds ``stoi_weight`` x :func:`stoi_loss_term` (negative STOI) to the
      supervised term (Fu et al. 2018; paired loss types only).
    """

    loss_type: str = "gan"
    adversarial_weight: float = 1.0
    cycle_weight: float = 20.0
    identity_weight: float = 10.0
    supervised_weight: float = 20.0
    spectral_weight: float = 1.0
    identity_decay_steps: int = 0
    spectral_compress: float = 1.0
    noisy_cycle_scale: float = 1.0
    remix_weight: float = 0.0
    remix_snr: Union[str, Sequence[float]] = "estimated"
    remix_noise: str = "estimate"
    sisdr_weight: float = 0.0
    stoi_weight: float = 0.0

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type '{self.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"loss weight {f.name}={value!r} must be a number >= 0")
        if not 0 < self.spectral_compress <= 1:
            raise ConfigError(f"spectral_compress={self.spectral_compress!r} must be in (0, 1] (1: no compression, "
                              "the paper)")
        if self.noisy_cycle_scale > 1:
            raise ConfigError(f"noisy_cycle_scale={self.noisy_cycle_scale!r} must be in [0, 1] (1: the paper's "
                              "symmetric cycle, 0: clean-side cycle only)")
        snr = self.remix_snr
        if snr != "estimated" and not (isinstance(snr, (list, tuple)) and len(snr) == 2
                                       and all(isinstance(v, (int, float)) for v in snr) and snr[0] <= snr[1]):
            raise ConfigError(f"remix_snr={snr!r} must be 'estimated' or [low, high] in dB with low <= high")
        if self.remix_noise not in REMIX_NOISE_SOURCES:
            raise ConfigError(f"remix_noise={self.remix_noise!r} must be one of {', '.join(REMIX_NOISE_SOURCES)}")
        if self.sisdr_weight > 0 and self.loss_type not in ("l1gan", "l1"):
            raise ConfigError(f"sisdr_weight={self.sisdr_weight!r} needs a paired loss_type (l1 or l1gan), "
                              f"not {self.loss_type!r}: it compares with clean references")
        if self.stoi_weight > 0 and self.loss_type not in ("l1gan", "l1"):
            raise ConfigError(f"stoi_weight={self.stoi_weight!r} needs a paired loss_type (l1 or l1gan), "
                              f"not {self.loss_type!r}: it compares with clean references")
        steps = self.identity_decay_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"identity_decay_steps={steps!r} must be an integer >= 0 (0: constant, the paper)")

    def remix_snr_draw(self, batch: int) -> Optional[torch.Tensor]:
        """``[batch]`` SNRs (dB) for :func:`remix_pseudo_noisy`: uniform in ``remix_snr``, or None when the
        estimated SNRs are kept."""
        if self.remix_snr == "estimated":
            return None
        low, high = (float(v) for v in self.remix_snr)
        return low + (high - low) * torch.rand(batch)

    def identity_weight_at(self, step: int) -> float:
        """The identity weight for generator update ``step`` (0-based): constant unless
        ``identity_decay_steps`` is set, then linear from ``identity_weight`` to 0 over that many updates."""
        if self.identity_decay_steps == 0:
            return self.identity_weight
        return self.identity_weight * max(0.0, 1.0 - step / self.identity_decay_steps)

    @property
    def adversarial(self) -> bool:
        """Whether discriminators are trained (not in pure ``l1``)."""
        return self.loss_type in ("gan", "l1gan") and self.adversarial_weight > 0

    @property
    def supervised(self) -> bool:
        """Whether the paired supervised L1 term is on."""
        return self.loss_type in ("l1gan", "l1")

    @property
    def cycle(self) -> bool:
        """Whether the clean->noisy generator and the cycle/identity terms are trained."""
        return self.loss_type in ("gan", "l1gan")

    @classmethod
    def from_hparams(cls, hparams: dict) -> "LossConfig":
        """Builds the config from a dict, refusing unknown keys with a one-line :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(hparams) - known)
        if unknown:
            raise ConfigError(f"unknown loss option(s) {unknown}; known: {sorted(known)}")
        return cls(**hparams)
