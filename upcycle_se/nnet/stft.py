"""STFT front end: waveform ``[batch, time]`` <-> complex spectrum ``[batch, 2, freq, frames]``.

Defaults follow DCCRN and the Up-Cycle-SENet paper at 16 kHz: ``n_fft=512`` (257 bins), a 400-sample
(25 ms) periodic Hann window, hop 100 (6.25 ms). Frames are centred (``n_fft // 2`` samples of
padding on both sides), so a signal of ``T`` samples has ``T // hop + 1`` frames.

Padding is zeros (``pad_mode="constant"``), not torch's default reflection: reflection needs
``T > n_fft // 2`` samples, and enhancement must accept any length down to one sample.

Two interchangeable back ends give the same numbers (to float rounding):

- ``"torch"`` (default): :func:`torch.stft` / :func:`torch.istft`;
- ``"conv"``: the same transform as a strided 1-D convolution with a windowed DFT basis and, for the
  inverse, a transposed convolution divided by the overlap-added squared window. It uses only real
  operations, so the ONNX exporter (which has no complex tensors and no ISTFT) can trace it.

Authors
 * upcycle-se contributors 2025
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ComplexSTFT", "ConvSTFT"]

_BACKENDS = ("torch", "conv")


class ComplexSTFT(nn.Module):
    """Short-time Fourier transform with a real ``[batch, 2, freq, frames]`` spectrum layout.

    Arguments
    ---------
    n_fft : int
        FFT size (``n_fft // 2 + 1`` frequency bins).
    win_length : int
        Hann window length (centred in the ``n_fft`` frame when shorter).
    hop_length : int
        Frame shift in samples.
    pad_mode : str
        Centre padding: ``"constant"`` (zeros, any length works) or ``"reflect"``.
    backend : str
        ``"torch"`` or ``"conv"`` (ONNX-exportable); can be switched later through ``.backend``.

    Example
    -------
    >>> stft = ComplexSTFT()
    >>> wav = torch.randn(2, 16000)
    >>> spec = stft.stft(wav)
    >>> spec.shape
    torch.Size([2, 2, 257, 161])
    >>> stft.istft(spec, length=16000).shape
    torch.Size([2, 16000])
    """

    def __init__(
        self,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 100,
        pad_mode: str = "constant",
        backend: str = "torch",
    ):
        super().__init__()
        if not 0 < hop_length <= win_length <= n_fft:
            raise ValueError(f"need 0 < hop_length <= win_length <= n_fft, got {hop_length}, {win_length}, {n_fft}")
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.pad_mode = pad_mode
        self.backend = backend
        # Buffers are derived from the sizes, so they stay out of state_dicts (persistent=False).
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        forward_basis, inverse_basis = self._conv_bases()
        self.register_buffer("forward_basis", forward_basis, persistent=False)
        self.register_buffer("inverse_basis", inverse_basis, persistent=False)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {value!r}")
        self._backend = value

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def n_frames(self, length: int) -> int:
        """Frames of a ``length``-sample signal."""
        return length // self.hop_length + 1

    def _full_window(self) -> torch.Tensor:
        """The window zero-padded (centred) to ``n_fft`` samples, as torch.stft does."""
        left = (self.n_fft - self.win_length) // 2
        return F.pad(self.window, (left, self.n_fft - self.win_length - left))

    def _conv_bases(self):
        """Forward and inverse windowed DFT bases, each ``[2*freq, 1, n_fft]`` (built in float64)."""
        n = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(self.n_freqs, dtype=torch.float64)
        angle = 2.0 * math.pi * k[:, None] * n[None, :] / self.n_fft
        win = self._full_window().to(torch.float64)
        forward = torch.cat([torch.cos(angle) * win, -torch.sin(angle) * win])
        # One-sided inverse DFT: bins other than DC and Nyquist stand for their conjugate pair too.
        scale = torch.full((self.n_freqs, 1), 2.0 / self.n_fft, dtype=torch.float64)
        scale[0] = 1.0 / self.n_fft
        if self.n_fft % 2 == 0:
            scale[-1] = 1.0 / self.n_fft
        inverse = torch.cat([torch.cos(angle) * scale * win, -torch.sin(angle) * scale * win])
        return forward.unsqueeze(1).float(), inverse.unsqueeze(1).float()

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, time]`` -> ``[batch, 2, freq, frames]`` (real, imaginary)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform [batch, time], got shape {tuple(wav.shape)}")
        if self.backend == "conv":
            half = self.n_fft // 2
            padded = F.pad(wav.unsqueeze(1), (half, half), mode=self.pad_mode)
            spec = F.conv1d(padded, self.forward_basis, stride=self.hop_length)  # [B, 2F, N]
            return spec.reshape(spec.shape[0], 2, self.n_freqs, spec.shape[-1])
        spec = torch.stft(
            wav,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode=self.pad_mode,
            onesided=True,
            return_complex=True,
        )
        return torch.stack([spec.real, spec.imag], dim=1)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``[batch, 2, freq, frames]`` -> ``[batch, length]`` (inverse of :meth:`stft`)."""
        if spec.dim() != 4 or spec.shape[1] != 2 or spec.shape[2] != self.n_freqs:
            raise ValueError(f"expected a spectrum [batch, 2, {self.n_freqs}, frames], got {tuple(spec.shape)}")
        if self.backend == "conv":
            frames = spec.reshape(spec.shape[0], 2 * self.n_freqs, spec.shape[-1])
            wav = F.conv_transpose1d(frames, self.inverse_basis, stride=self.hop_length)  # [B, 1, (N-1)*hop + n_fft]
            # Overlap-added squared window, the least-squares normaliser torch.istft also divides by.
            win_sq = (self._full_window() ** 2).view(1, 1, -1)
            ones = torch.ones_like(frames[:1, :1])
            envelope = F.conv_transpose1d(ones, win_sq, stride=self.hop_length)
            wav = wav / envelope.clamp_min(1e-11)
            half = self.n_fft // 2
            wav = wav[:, 0, half:]
            # Pads (zeros) or crops to exactly `length`, like torch.istft(length=...).
            return F.pad(wav, (0, max(0, length - wav.shape[-1])))[:, :length]
        return torch.istft(
            torch.complex(spec[:, 0], spec[:, 1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            onesided=True,
            length=length,
        )

    def extra_repr(self) -> str:
        return (
            f"n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}, "
            f"pad_mode={self.pad_mode!r}, backend={self.backend!r}"
        )


class ConvSTFT(nn.Module):
    """DCCRN's convolutional STFT (Hu et al., Interspeech 2020), the front end of the authors' Up-Cycle-SENet.

    It differs from :class:`ComplexSTFT` in three ways, each of which changes the numbers:

    - the ``win_length``-sample periodic Hann window sits at the *start* of the ``n_fft`` frame (the DFT of
      a ``win_length`` frame zero-padded at its end), not centred in it;
    - the signal is padded with ``win_length - hop_length`` zeros on each side, so frame ``j`` covers
      samples ``[j*hop - pad, j*hop - pad + win_length)`` and a ``T``-sample signal has
      ``(T + 2*pad - win_length) // hop + 1`` frames;
    - the inverse applies the pseudo-inverse of the (tall) windowed DFT basis to each frame, overlap-adds,
      and divides by the overlap-added squared window plus ``1e-8``.

    Both directions are real 1-D (transposed) convolutions, so the module traces for ONNX as it is.

    Arguments
    ---------
    n_fft : int
        DFT size (``n_fft // 2 + 1`` bins).
    win_length : int
        Periodic Hann window length, ``<= n_fft``.
    hop_length : int
        Frame shift, ``<= win_length``.

    Example
    -------
    >>> stft = ConvSTFT()
    >>> spec = stft.stft(torch.randn(2, 32000))
    >>> spec.shape  # [batch, 2, freq, frames]
    torch.Size([2, 2, 257, 323])
    >>> stft.istft(spec, length=32000).shape
    torch.Size([2, 32000])
    """

    def __init__(self, n_fft: int = 512, win_length: int = 400, hop_length: int = 100):
        super().__init__()
        if not 0 < hop_length <= win_length <= n_fft:
            raise ValueError(f"need 0 < hop_length <= win_length <= n_fft, got {hop_length}, {win_length}, {n_fft}")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.pad = win_length - hop_length
        n = torch.arange(win_length, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        angle = 2.0 * math.pi * k[:, None] * n[None, :] / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)])  # [2F, win]: rows re then im, as rfft gives
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        inverse = torch.linalg.pinv(basis).T  # [2F, win]: least-squares frame from its (modified) spectrum
        # Derived from the sizes, so kept out of state_dicts (persistent=False).
        self.register_buffer("forward_basis", (basis * window).unsqueeze(1).float(), persistent=False)
        self.register_buffer("inverse_basis", (inverse * window).unsqueeze(1).float(), persistent=False)
        self.register_buffer("window_sq", (window ** 2).view(1, 1, -1).float(), persistent=False)

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def n_frames(self, length: int) -> int:
        """Frames of a ``length``-sample signal."""
        return (length + 2 * self.pad - self.win_length) // self.hop_length + 1

    def length_for_frames(self, n_frames: int) -> int:
        """The shortest signal length that has ``n_frames`` frames."""
        return (n_frames - 1) * self.hop_length + self.win_length - 2 * self.pad

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, time]`` -> ``[batch, 2, freq, frames]`` (real, imaginary)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform [batch, time], got shape {tuple(wav.shape)}")
        padded = F.pad(wav.unsqueeze(1), (self.pad, self.pad))
        spec = F.conv1d(padded, self.forward_basis, stride=self.hop_length)  # [B, 2F, N]
        return spec.reshape(spec.shape[0], 2, self.n_freqs, spec.shape[-1])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``[batch, 2, freq, frames]`` -> ``[batch, length]``: samples ``[0, length)`` of the inverse
        (zeros past the last frame's reach)."""
        if spec.dim() != 4 or spec.shape[1] != 2 or spec.shape[2] != self.n_freqs:
            raise ValueError(f"expected a spectrum [batch, 2, {self.n_freqs}, frames], got {tuple(spec.shape)}")
        frames = spec.reshape(spec.shape[0], 2 * self.n_freqs, spec.shape[-1])
        wav = F.conv_transpose1d(frames, self.inverse_basis, stride=self.hop_length)  # [B, 1, (N-1)*hop + win]
        # Overlap-added squared window: the least-squares normaliser of windowed overlap-add.
        envelope = F.conv_transpose1d(torch.ones_like(frames[:1, :1]), self.window_sq, stride=self.hop_length)
        wav = (wav / (envelope + 1e-8))[:, 0, self.pad:]
        return F.pad(wav, (0, max(0, length - wav.shape[-1])))[:, :length]

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}"
