"""Waveform discriminators of Up-Cycle-SENet: fast non-autoregressive 1-D CNNs (MelGAN style).

:class:`WaveDiscriminator` scores overlapping patches of a waveform ``[batch, time]`` with a stack of
weight-normalised, grouped, strided 1-D convolutions and LeakyReLU(0.2), returning a patch score map
``[batch, 1, frames]`` (a PatchGAN-style output, trained with the least-squares GAN loss).

Presets (``from_preset``): ``"paper"`` is the authors' discriminator layer for layer (one MelGAN block:
reflection-padded kernel 15, four stride-4 kernel-41 layers grouped 4/16/64/256, kernel 5, kernel 3;
16 -> 1024 channels); ``"small"`` (8 -> 128 channels, kernel 21, zero padding) is for quick CPU runs and
tests.

:class:`MultiScaleDiscriminator` runs several of them on the waveform average-pooled 1x, 2x, 4x, ...; one
scale is the paper's, three scales are MelGAN's multi-scale discriminator (Kumar et al., "MelGAN:
Generative Adversarial Networks for Conditional Waveform Synthesis", NeurIPS 2019), an opt-in here
(``n_scales``).

Authors
 * upcycle-se contributors 2025
"""

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from upcycle_se.errors import ConfigError

__all__ = ["WaveDiscriminator", "MultiScaleDiscriminator", "DISCRIMINATOR_PRESETS"]

#: Constructor overrides of each preset, for both discriminator classes (``paper`` = the defaults).
DISCRIMINATOR_PRESETS: Dict[str, Dict[str, Any]] = {
    "paper": {},
    "small": {"base_channels": 8, "max_channels": 128, "kernel_size": 21, "first_padding": "zeros"},
}


def _wn_conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
             padding_mode: str = "zeros") -> nn.Module:
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                 padding_mode=padding_mode))


class WaveDiscriminator(nn.Module):
    """Non-autoregressive 1-D CNN discriminator on the waveform.

    Layers: conv(1 -> base, kernel 15); per ``downsample`` factor s a grouped conv (channels x s up to
    ``max_channels``, stride s, ``c_in // group_channels`` groups); conv(kernel 5); conv -> 1 score
    channel. All weight-normalised, LeakyReLU(``negative_slope``) between them.

    Arguments
    ---------
    base_channels : int
        Channels of the first layer.
    max_channels : int
        Channel cap of the strided layers.
    downsamples : sequence of int
        Stride of each strided layer (their product is the score map's hop in samples).
    kernel_size : int
        Kernel of the strided layers (odd; MelGAN uses 10 x stride + 1).
    group_channels : int
        Input channels per group of the strided layers.
    negative_slope : float
        LeakyReLU slope.
    first_padding : str
        Padding of the first convolution: ``"reflect"`` (MelGAN's and the authors'; needs inputs longer
        than 7 samples) or ``"zeros"`` (any length >= 1 sample).

    Example
    -------
    >>> disc = WaveDiscriminator.from_preset("small")
    >>> disc(torch.randn(2, 16000)).shape  # [batch, 1, frames]
    torch.Size([2, 1, 63])
    """

    def __init__(
        self,
        base_channels: int = 16,
        max_channels: int = 1024,
        downsamples: Sequence[int] = (4, 4, 4, 4),
        kernel_size: int = 41,
        group_channels: int = 4,
        negative_slope: float = 0.2,
        first_padding: str = "reflect",
    ):
        super().__init__()
        if first_padding not in ("reflect", "zeros"):
            raise ConfigError(f"first_padding must be 'reflect' or 'zeros', got {first_padding!r}")
        if kernel_size % 2 == 0 or base_channels < 1 or max_channels < base_channels:
            raise ConfigError(
                f"need an odd kernel_size and 1 <= base_channels <= max_channels, got {kernel_size}, "
                f"{base_channels}, {max_channels}"
            )
        self._config = {
            "base_channels": int(base_channels),
            "max_channels": int(max_channels),
            "downsamples": [int(s) for s in downsamples],
            "kernel_size": int(kernel_size),
            "group_channels": int(group_channels),
            "negative_slope": float(negative_slope),
            "first_padding": first_padding,
        }
        self.negative_slope = negative_slope
        layers = [_wn_conv(1, base_channels, 15, padding_mode=first_padding)]
        c_in = base_channels
        for stride in downsamples:
            c_out = min(c_in * stride, max_channels)
            groups = max(1, c_in // group_channels)
            while c_out % groups:  # keep the grouping valid for any channel sizes
                groups -= 1
            layers.append(_wn_conv(c_in, c_out, kernel_size, stride=stride, groups=groups))
            c_in = c_out
        layers.append(_wn_conv(c_in, c_in, 5))
        self.layers = nn.ModuleList(layers)
        self.score = _wn_conv(c_in, 1, 3)

    @property
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable constructor kwargs."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "WaveDiscriminator":
        """Builds the ``"paper"`` or ``"small"`` discriminator, with constructor ``overrides`` on top."""
        if name not in DISCRIMINATOR_PRESETS:
            raise ConfigError(f"unknown discriminator preset {name!r}; choose one of {sorted(DISCRIMINATOR_PRESETS)}")
        return cls(**{**DISCRIMINATOR_PRESETS[name], **overrides})

    def forward_with_features(self, wav: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``[batch, time]`` -> (scores ``[batch, 1, frames]``, hidden activations for feature matching)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform [batch, time], got shape {tuple(wav.shape)}")
        h = wav.unsqueeze(1)
        features = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), self.negative_slope)
            features.append(h)
        return self.score(h), features

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, time]`` -> patch scores ``[batch, 1, frames]``."""
        return self.forward_with_features(wav)[0]


class MultiScaleDiscriminator(nn.Module):
    """``n_scales`` :class:`WaveDiscriminator` s; scale k sees the waveform average-pooled k times
    (kernel 4, stride 2), i.e. at 1/2**k of the sample rate.

    Arguments
    ---------
    n_scales : int
        Number of discriminators.
    **disc_kwargs
        :class:`WaveDiscriminator` arguments shared by all scales.

    Example
    -------
    >>> msd = MultiScaleDiscriminator.from_preset("small")
    >>> [s.shape for s in msd(torch.randn(2, 16000))]
    [torch.Size([2, 1, 63]), torch.Size([2, 1, 32]), torch.Size([2, 1, 16])]
    """

    def __init__(self, n_scales: int = 3, **disc_kwargs: Any):
        super().__init__()
        if n_scales < 1:
            raise ConfigError(f"n_scales must be >= 1, got {n_scales}")
        self.discriminators = nn.ModuleList(WaveDiscriminator(**disc_kwargs) for _ in range(n_scales))
        self._config = {"n_scales": int(n_scales), **self.discriminators[0].config}

    @property
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable constructor kwargs."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def from_preset(cls, name: str = "paper", n_scales: int = 3, **overrides: Any) -> "MultiScaleDiscriminator":
        """Builds ``n_scales`` discriminators of the ``"paper"`` or ``"small"`` preset."""
        if name not in DISCRIMINATOR_PRESETS:
            raise ConfigError(f"unknown discriminator preset {name!r}; choose one of {sorted(DISCRIMINATOR_PRESETS)}")
        return cls(n_scales=n_scales, **{**DISCRIMINATOR_PRESETS[name], **overrides})

    @staticmethod
    def _downsample(wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] < 2:  # the pooling window must fit in the padded signal
            wav = F.pad(wav, (0, 2 - wav.shape[-1]), mode="replicate")
        return F.avg_pool1d(wav.unsqueeze(1), 4, stride=2, padding=1, count_include_pad=False).squeeze(1)

    def forward_with_features(self, wav: torch.Tensor) -> Tuple[List[torch.Tensor], List[List[torch.Tensor]]]:
        """``[batch, time]`` -> (per-scale scores ``[batch, 1, frames_k]``, per-scale feature lists)."""
        scores, features = [], []
        for k, disc in enumerate(self.discriminators):
            if k:
                wav = self._downsample(wav)
            s, f = disc.forward_with_features(wav)
            scores.append(s)
            features.append(f)
        return scores, features

    def forward(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """``[batch, time]`` -> list of ``n_scales`` patch score maps ``[batch, 1, frames_k]``."""
        return self.forward_with_features(wav)[0]
