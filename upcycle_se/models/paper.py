"""The authors' Up-Cycle-SENet generator, layer for layer (Park & Choi, Neurocomputing 624 (2025) 129365).

A port of the networks in the authors' code (github.com/towardsDLCV/Up-Cycle-SENet, MIT licence),
written on this package's complex layers: a checkpoint of theirs maps onto it weight for weight
(:mod:`upcycle_se.reference_import`), and ``benchmarks/reference_equality.py`` checks the outputs against
their code. Layout of the default (``channels=(16, 16, 16, 64, 256)``)::

    ConvSTFT (DCCRN: Hann 400 at the frame start, hop 100, FFT 512)     [B, 2, 257, N]
    proj: ComplexConv2d 1 -> c0, 5x7
    d1..d3: residual block c_i -> c_i+1, then ComplexConv2d 5x7 stride 2   (the skip is taken after it)
    d4: residual block c3 -> c4 (no down-sampling)
    bridge: ASPP(c4)
    u1: residual block c4 -> c3;  cat d3
    u2: residual block 2*c3 -> c2, ComplexConvTranspose2d 5x7 stride 2;  cat d2
    u3: residual block 2*c2 -> c1, transposed conv (output padding 0, 1);  cat d1
    u4: residual block 2*c1 -> c0, transposed conv
    head: ASPP(c0) -> ComplexConv2d 5x7 -> BN -> LeakyReLU -> ComplexConv2d 5x7 c0 -> 1   => M
    mask: |Y| = tanh(|M|) |X|, angle(Y) = angle(X) + angle(M)   (``mode="mask"``, noisy -> clean)
          Y = M                                                  (``mode="map"``, clean -> noisy)
    iSTFT (pseudo-inverse basis), clamp to [-1, 1]

Every convolution is 5x7 (padding 2, 3) except the ASPP's; LeakyReLUs have PyTorch's default slope 0.01;
the ASPP ends in Dropout(0.5). Their network only accepts frame counts ``N`` that its stride-2 levels halve
and the decoder doubles back exactly (``N % 8 == 3``, e.g. the 323 frames of their 2 s training crops);
this port zero-pads the waveform at its end up to the next such length and crops the output, so any
length works and lengths their code accepts give their numbers.

Authors
 * upcycle-se contributors 2025
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from upcycle_se.errors import ConfigError
from upcycle_se.models.attenuation import AttenuationLimit
from upcycle_se.nnet.complex import (
    ComplexBatchNorm2d,
    ComplexConv2d,
    ComplexConvTranspose2d,
    ComplexLeakyReLU,
    ComplexResidualBlock,
    complex_cat,
)
from upcycle_se.nnet.stft import ConvSTFT

__all__ = ["PaperGenerator", "PaperASPP", "PAPER_PRESETS"]

#: Constructor overrides of each faithful preset (``paper`` is the authors' network).
PAPER_PRESETS: Dict[str, Dict[str, Any]] = {
    "paper": {},
    # The same layout at a quarter of the full-resolution channels, for CPU training: the 5x7 convolutions
    # at full and half resolution are where the authors' network spends its operations.
    "paper_small": {"channels": [8, 8, 8, 32, 128]},
}

_MODES = ("mask", "map")


def reference_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Element-wise dropout of a complex map ``[batch, 2*C, freq, frames]`` whose mask is drawn in the
    authors' memory order ``[batch, C, freq, frames, (re, im)]``: with the same seed, the same elements
    are dropped as in their code (their tensors keep real and imaginary parts in a last axis)."""
    if not training or p == 0.0:
        return x
    b, c2, f, n = x.shape
    keep = torch.empty((b, c2 // 2, f, n, 2), dtype=x.dtype, device=x.device).bernoulli_(1.0 - p)
    keep = keep.permute(0, 4, 1, 2, 3).reshape(b, c2, f, n)
    return x * keep.div_(1.0 - p)


class _Separable(nn.Module):
    """The authors' complex "depthwise" convolution: depthwise complex conv (no bias) -> complex BN ->
    1x1 complex conv (with bias). ``[B, 2*c_in, F, N] -> [B, 2*c_out, F, N]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.depthwise = ComplexConv2d(c_in, c_in, kernel, padding=pad, dilation=dilation, groups=c_in, bias=False)
        self.norm = ComplexBatchNorm2d(c_in)
        self.pointwise = ComplexConv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))


class PaperASPP(nn.Module):
    """The authors' complex atrous spatial pyramid pooling (DeepLabv3's ASPP on complex maps).

    Branches, each ending in complex BN and LeakyReLU: one :class:`_Separable` 3x3 atrous conv per rate,
    and a global-average branch (1x1 :class:`_Separable`, broadcast back). The input and the branches are
    concatenated and projected (1x1 :class:`_Separable` -> BN -> LeakyReLU -> Dropout).

    Arguments
    ---------
    channels : int
        Complex channels in and out (the authors' projection needs them equal).
    rates : sequence of int
        Dilation rates of the atrous branches.
    negative_slope : float
        LeakyReLU slope.
    dropout : float
        Dropout probability after the projection.

    Example
    -------
    >>> PaperASPP(4).eval()(torch.randn(2, 8, 17, 11)).shape
    torch.Size([2, 8, 17, 11])
    """

    def __init__(self, channels: int, rates: Sequence[int] = (3, 9), negative_slope: float = 0.01,
                 dropout: float = 0.5):
        super().__init__()

        def norm_act() -> List[nn.Module]:
            return [ComplexBatchNorm2d(channels), ComplexLeakyReLU(negative_slope)]

        self.atrous = nn.ModuleList(
            nn.Sequential(_Separable(channels, channels, 3, dilation=int(r)), *norm_act()) for r in rates
        )
        self.pool = nn.Sequential(_Separable(channels, channels, 1), *norm_act())
        self.project = nn.Sequential(_Separable((len(self.atrous) + 2) * channels, channels, 1), *norm_act())
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*C, freq, frames]`` -> same shape."""
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        h = self.project(complex_cat([x] + [branch(x) for branch in self.atrous] + [pooled]))
        return reference_dropout(h, self.dropout, self.training)


class _Level(nn.Module):
    """A residual block then, optionally, a stride-2 (transposed) convolution."""

    def __init__(self, c_in: int, c_out: int, resample: str, kernel: Tuple[int, int], negative_slope: float,
                 output_padding: Tuple[int, int] = (0, 0)):
        super().__init__()
        self.res = ComplexResidualBlock(c_in, c_out, kernel, negative_slope=negative_slope)
        pad = (kernel[0] // 2, kernel[1] // 2)
        if resample == "down":
            self.resample = ComplexConv2d(c_out, c_out, kernel, stride=2, padding=pad)
        elif resample == "up":
            self.resample = ComplexConvTranspose2d(c_out, c_out, kernel, stride=2, padding=pad,
                                                   output_padding=output_padding)
        else:
            self.resample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(self.res(x))


class PaperGenerator(AttenuationLimit, nn.Module):
    """The authors' Up-Cycle-SENet generator (see the module docstring); ``PaperGenerator()`` is their
    noisy->clean network, ``PaperGenerator(mode="map")`` their clean->noisy one.

    Arguments
    ---------
    mode : str
        ``"mask"`` (noisy -> clean, polar mask) or ``"map"`` (clean -> noisy, the spectrum directly).
    channels : sequence of 5 int
        Complex channels: projection, the three down-sampling levels, the bottom level.
    kernel_size : (int, int)
        Kernel of every non-ASPP convolution over ``(freq, frames)`` (odd).
    aspp_rates : sequence of int
        Atrous rates of both ASPP modules.
    negative_slope : float
        LeakyReLU slope.
    dropout : float
        Dropout probability at the end of both ASPP modules.
    n_fft, win_length, hop_length : int
        STFT sizes (:class:`upcycle_se.nnet.stft.ConvSTFT`).

    Example
    -------
    >>> gen = PaperGenerator.from_preset("paper_small").eval()
    >>> gen(torch.randn(2, 12345)).shape
    torch.Size([2, 12345])
    """

    def __init__(
        self,
        mode: str = "mask",
        channels: Sequence[int] = (16, 16, 16, 64, 256),
        kernel_size: Sequence[int] = (5, 7),
        aspp_rates: Sequence[int] = (3, 9),
        negative_slope: float = 0.01,
        dropout: float = 0.5,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 100,
    ):
        super().__init__()
        if mode not in _MODES:
            raise ConfigError(f"paper generator mode must be one of {_MODES}, got {mode!r}")
        ch = [int(c) for c in channels]
        if len(ch) != 5 or min(ch) < 1:
            raise ConfigError(f"channels needs 5 positive entries (projection, 3 levels, bottom), got {list(channels)}")
        kernel = (int(kernel_size[0]), int(kernel_size[1]))
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {list(kernel)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self._config = {
            "mode": mode,
            "channels": ch,
            "kernel_size": list(kernel),
            "aspp_rates": [int(r) for r in aspp_rates],
            "negative_slope": float(negative_slope),
            "dropout": float(dropout),
            "n_fft": int(n_fft),
            "win_length": int(win_length),
            "hop_length": int(hop_length),
        }
        self.mode = mode
        self.stft = ConvSTFT(n_fft, win_length, hop_length)
        if not self._fits(self.stft.n_freqs, middle_padding=0):
            raise ConfigError(f"n_fft={n_fft}: {self.stft.n_freqs} bins do not survive the 3 stride-2 levels and "
                              "their transposed convolutions (the authors' layout needs e.g. 257)")
        slope, aspp = float(negative_slope), {"rates": aspp_rates, "negative_slope": negative_slope,
                                              "dropout": dropout}
        c0, c1, c2, c3, c4 = ch
        self.proj = ComplexConv2d(1, c0, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.down = nn.ModuleList([
            _Level(c0, c1, "down", kernel, slope),
            _Level(c1, c2, "down", kernel, slope),
            _Level(c2, c3, "down", kernel, slope),
            _Level(c3, c4, "none", kernel, slope),
        ])
        self.bridge = PaperASPP(c4, **aspp)
        self.up = nn.ModuleList([
            _Level(c4, c3, "none", kernel, slope),
            _Level(2 * c3, c2, "up", kernel, slope),
            _Level(2 * c2, c1, "up", kernel, slope, output_padding=(0, 1)),
            _Level(2 * c1, c0, "up", kernel, slope),
        ])
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.head = nn.Sequential(
            PaperASPP(c0, **aspp),
            ComplexConv2d(c0, c0, kernel, padding=pad),
            ComplexBatchNorm2d(c0),
            ComplexLeakyReLU(slope),
            ComplexConv2d(c0, 1, kernel, padding=pad),
        )
        for module in self.modules():  # the authors initialise every complex convolution Xavier-uniform
            if isinstance(module, (ComplexConv2d, ComplexConvTranspose2d)):
                for weight in (module.weight_real, module.weight_imag):
                    nn.init.xavier_uniform_(weight)

    #: Run the U-Net on channels-last maps on CPU, where oneDNN's convolutions are faster in that layout
    #: (the numbers are the same to float rounding). Not used on GPU, nor while tracing for ONNX export.
    channels_last_on_cpu: bool = True

    @staticmethod
    def _fits(size: int, middle_padding: int) -> bool:
        """Whether an axis of ``size`` goes down the three stride-2 levels and back up to the skips' sizes:
        the transposed convolutions give ``2n - 1`` (``2n - 1 + middle_padding`` for the middle one, whose
        output padding is 0 over frequency and 1 over frames)."""
        sizes = [size]
        for _ in range(3):
            sizes.append((sizes[-1] + 1) // 2)
        return (2 * sizes[3] - 1 == sizes[2] and 2 * sizes[2] - 1 + middle_padding == sizes[1]
                and 2 * sizes[1] - 1 == sizes[0])

    def valid_length(self, length: int) -> int:
        """The shortest length ``>= length`` whose frame count the network accepts (``N % 8 == 3``)."""
        n = self.stft.n_frames(max(int(length), 1))
        while not self._fits(n, middle_padding=1):
            n += 1
        return max(int(length), self.stft.length_for_frames(n))

    @property
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable constructor kwargs: ``PaperGenerator(**gen.config)`` rebuilds the model."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "PaperGenerator":
        """Builds the ``"paper"`` or ``"paper_small"`` generator, with constructor ``overrides`` on top."""
        if name not in PAPER_PRESETS:
            raise ConfigError(f"unknown paper generator preset {name!r}; choose one of {sorted(PAPER_PRESETS)}")
        return cls(**{**PAPER_PRESETS[name], **overrides})

    @property
    def unet_dtype(self) -> torch.dtype:
        """The dtype of the U-Net's weights and feature maps (float32 unless :meth:`set_unet_dtype` changed it)."""
        return self.proj.weight_real.dtype

    def set_unet_dtype(self, dtype: torch.dtype) -> "PaperGenerator":
        """Runs the U-Net in ``dtype`` (``torch.bfloat16`` for fast inference, or ``torch.float32``); the
        STFT, the mask, the waveform and the batch norms stay float32. For inference only. Returns ``self``."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"the U-Net runs in float32 or bfloat16, not {dtype}")
        for module in self.modules():
            if isinstance(module, (ComplexBatchNorm2d, nn.BatchNorm2d, ConvSTFT)):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
        return self

    def estimate(self, spec: torch.Tensor) -> torch.Tensor:
        """The U-Net alone: spectrum ``[batch, 2, freq, frames]`` -> head output M, same shape. The frame
        count must be one the network accepts (see :meth:`valid_length`)."""
        x = spec
        if self.channels_last_on_cpu and x.device.type == "cpu" and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.proj(x.to(self.unet_dtype))
        skips = []
        for level in self.down[:3]:
            h = level(h)
            skips.append(h)
        h = self.bridge(self.down[3](h))
        for level in self.up[:3]:
            h = complex_cat([level(h), skips.pop()])
        return self.head(self.up[3](h)).to(spec.dtype)

    def apply_output(self, spec: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """The output spectrum from the input ``spec`` and the head output ``est`` (both ``[B, 2, F, N]``),
        with the authors' operations in their order (so their numbers are reproduced). The mask's magnitude
        gain ``tanh(|M|)`` is clamped from below at :attr:`gain_floor` when :attr:`max_attenuation_db` is set
        (:mod:`upcycle_se.models.attenuation`; not the authors')."""
        if self.mode == "map":
            return est
        xr, xi, mr, mi = spec[:, 0:1], spec[:, 1:2], est[:, 0:1], est[:, 1:2]
        spec_mag = torch.sqrt(xr ** 2 + xi ** 2 + 1e-8)
        spec_phase = torch.atan2(xi, xr)
        mask_mag = (mr ** 2 + mi ** 2) ** 0.5
        mask_phase = torch.atan2(mi / (mask_mag + 1e-8), mr / (mask_mag + 1e-8))
        gain = torch.tanh(mask_mag)
        floor = self.gain_floor
        if floor is not None:
            gain = gain.clamp_min(floor)
        mag, phase = gain * spec_mag, mask_phase + spec_phase
        return torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)

    def forward_with_spec(self, wav: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[batch, time]`` -> (waveform ``[batch, time]`` in [-1, 1], output spectrum
        ``[batch, 2, freq, frames]`` with the frames of a ``time``-sample signal)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform [batch, time], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        padded = F.pad(wav, (0, self.valid_length(length) - length))
        spec = self.stft.stft(padded)
        out_spec = self.apply_output(spec, self.estimate(spec))
        out = self.stft.istft(out_spec, length=length).clamp(-1.0, 1.0)
        # The zero padding's frames hold zeros of the STFT's own padding: frame j of `wav` is frame j here.
        return out, out_spec[..., : self.stft.n_frames(length)]

    def forward(self, wav: torch.Tensor, return_spec: bool = False):
        """``[batch, time]`` -> ``[batch, time]`` (same length); with ``return_spec`` also the spectrum."""
        out, spec = self.forward_with_spec(wav)
        return (out, spec) if return_spec else out

