"""This project's redesign of the Up-Cycle-SENet generator: a complex-valued convolutional U-Net on the STFT
(DCCRN lineage). The authors' network, layer for layer, is :class:`upcycle_se.models.PaperGenerator`; this
one differs in kernels (3x3, 4x4 transposed), level layout, ASPP and STFT, and runs on any length by padding
its feature maps.

Waveform in, waveform out (``[batch, time]``, same length, any length). Inside::

    STFT [B, 2, 257, N] -> zero-pad freq and frames to multiples of 2**levels
    -> projection ComplexConv2d 1 -> c0 (kernel 5x7) -> residual block
    -> per level: ComplexConv2d stride 2 (freq and frames) -> residual block(s)      (skips kept)
    -> complex ASPP bridge at the bottom
    -> per level: ComplexConvTranspose2d stride 2 -> concat skip -> residual block(s)
    -> head: complex ASPP -> ComplexConv2d c0 -> 1  => M [B, 2, F, N] (cropped back)
    -> mask or map -> ISTFT -> crop to the input length

Output modes:

- ``mode="mask"`` (noisy -> clean), ``mask_type="complex"``: the DCCRN-E polar mask,
  ``|Y| = tanh(|M|) * |X|``, ``angle(Y) = angle(X) + angle(M)``, computed as
  ``tanh(|M|) / |M| * M * X`` (no atan2: smooth gradients, exportable);
- ``mode="mask"``, ``mask_type="magnitude"`` (the magnitude-only ablation): ``Y = tanh(|M|) * X``,
  a real mask bounded in [0, 1) with the noisy phase reused;
- ``mode="map"`` (clean -> noisy): ``Y = M``, the spectrum directly (the paper's).

Presets (:data:`GENERATOR_PRESETS`): ``redesign`` (channels 16, 16, 64, 256, three bottom blocks; about
the authors' parameter count), ``redesign_base`` (8, 16, 32, 128, two bottom blocks: the full-resolution
levels, where the MACs go, halved; for long CPU training) and ``redesign_small`` (8, 8, 16, 32, one bottom
block). Sizes and speed: ``python -m upcycle_se.models.profile`` and ``benchmarks/RESULTS.md``.

On CPU the U-Net runs on channels-last feature maps
(:attr:`UpCycleGenerator.channels_last_on_cpu`), and in evaluation mode the layers of
:mod:`upcycle_se.nnet.complex` fold batch norms into the preceding convolutions and apply activations in
place when no gradient is recorded; :func:`upcycle_se.models.runtime.keep_freed_memory` is an opt-in
process setting that removes the page faults of PyTorch's uncached CPU allocations.

In mask mode the head's real bias starts at 1 (M ~ 1: near pass-through, not muting). Export with
:func:`export_onnx` (dynamic batch and time; the STFT runs as real convolutions in the graph).

Authors
 * upcycle-se contributors 2025
"""

import warnings
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from upcycle_se.errors import ConfigError
from upcycle_se.models.attenuation import AttenuationLimit
from upcycle_se.nnet.complex import (
    ComplexASPP,
    ComplexBatchNorm2d,
    ComplexConv2d,
    ComplexConvTranspose2d,
    ComplexResidualBlock,
    complex_cat,
)
from upcycle_se.nnet.stft import ComplexSTFT

__all__ = ["UpCycleGenerator", "GENERATOR_PRESETS", "PRESET_ALIASES", "export_onnx"]

#: Constructor overrides of each preset of the redesign (``redesign`` is the constructor's defaults, at
#: about the authors' parameter count); ``redesign_base`` and ``redesign_small`` are it scaled down.
GENERATOR_PRESETS: Dict[str, Dict[str, Any]] = {
    "redesign": {},
    "redesign_small": {
        "encoder_channels": [8, 8, 16, 32],
        "bottom_res_blocks": 1,
    },
    # For long training on a 2-core CPU: the full-resolution levels are where the MACs go, so they are
    # halved (8, 16), while the low-resolution levels, cheap per parameter, keep most of the capacity
    # (32, 128 and two bottom blocks).
    "redesign_base": {
        "encoder_channels": [8, 16, 32, 128],
        "bottom_res_blocks": 2,
    },
}
#: Short names of the scaled-down presets, accepted everywhere a preset is (recipes, ``from_preset``).
PRESET_ALIASES: Dict[str, str] = {"base": "redesign_base", "small": "redesign_small"}

_MODES = ("mask", "map")
_MASK_TYPES = ("complex", "magnitude")


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _same(kernel: Tuple[int, int]) -> Tuple[int, int]:
    return kernel[0] // 2, kernel[1] // 2


class _Down(nn.Module):
    """Stride-2 complex conv (freq and frames) then residual blocks: ``[B, 2*c_in, F, N] -> [B, 2*c_out, F/2, N/2]``."""

    def __init__(self, c_in: int, c_out: int, kernel, n_res: int, block_kwargs: Dict[str, Any]):
        super().__init__()
        self.conv = ComplexConv2d(c_in, c_out, kernel, stride=2, padding=_same(kernel))
        self.res = nn.Sequential(*[ComplexResidualBlock(c_out, c_out, kernel, **block_kwargs) for _ in range(n_res)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(x))


class _Up(nn.Module):
    """Stride-2 complex transposed conv, concat with the skip, residual blocks back to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, kernel, up_kernel, n_res: int, block_kwargs: Dict[str, Any]):
        super().__init__()
        # kernel k, stride 2, padding (k - 2) // 2 (+ output_padding k % 2) exactly doubles the size.
        pad = ((up_kernel[0] - 2) // 2, (up_kernel[1] - 2) // 2)
        out_pad = (up_kernel[0] % 2, up_kernel[1] % 2)
        self.up = ComplexConvTranspose2d(c_in, c_out, up_kernel, stride=2, padding=pad, output_padding=out_pad)
        blocks = [ComplexResidualBlock(2 * c_out, c_out, kernel, **block_kwargs)]
        blocks += [ComplexResidualBlock(c_out, c_out, kernel, **block_kwargs) for _ in range(n_res - 1)]
        self.res = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = complex_cat([self.up(x), skip])
        del x, skip  # the skip is dead once concatenated: free it before the blocks (peak memory)
        return self.res(h)


class UpCycleGenerator(AttenuationLimit, nn.Module):
    """The redesign's complex U-Net generator; ``UpCycleGenerator()`` is its paper-size noisy->clean one.

    Arguments
    ---------
    mode : str
        ``"mask"`` (noisy -> clean) or ``"map"`` (clean -> noisy, spectrum mapping).
    mask_type : str
        ``"complex"`` (DCCRN-E polar mask) or ``"magnitude"`` (bounded magnitude mask, noisy phase);
        used in ``mask`` mode only.
    encoder_channels : sequence of int
        Complex channels per U-Net level: entry 0 is the full-resolution level after the 1 -> c0
        projection, each further entry one stride-2 level (the last is the bottom).
    proj_kernel : (int, int)
        Kernel of the projection convolution over ``(freq, frames)``.
    kernel_size : (int, int)
        Kernel of the strided and residual convolutions (odd).
    up_kernel : (int, int)
        Kernel of the stride-2 transposed convolutions.
    res_blocks : int
        Residual blocks per encoder/decoder level (>= 1).
    bottom_res_blocks : int
        Residual blocks at the bottom level.
    aspp_rates : sequence of int
        Atrous rates of both ASPP modules (bridge and head).
    head_kernel : (int, int)
        Kernel of the last convolution (c0 -> 1 complex channel).
    whitening : bool
        Whitening complex batch norm (Trabelsi et al.) instead of the naive one.
    activation : str
        ``"leaky_relu"`` or ``"prelu"`` (split complex activations).
    negative_slope : float
        LeakyReLU slope.
    n_fft, win_length, hop_length : int
        STFT sizes (see :class:`upcycle_se.nnet.stft.ComplexSTFT`).

    Example
    -------
    >>> gen = UpCycleGenerator.from_preset("small").eval()
    >>> wav = torch.randn(2, 12345)
    >>> gen(wav).shape
    torch.Size([2, 12345])
    >>> gen.forward_with_spec(wav)[1].shape  # [batch, 2, freq, frames]
    torch.Size([2, 2, 257, 124])
    """

    def __init__(
        self,
        mode: str = "mask",
        mask_type: str = "complex",
        encoder_channels: Sequence[int] = (16, 16, 64, 256),
        proj_kernel: Sequence[int] = (5, 7),
        kernel_size: Sequence[int] = (3, 3),
        up_kernel: Sequence[int] = (4, 4),
        res_blocks: int = 1,
        bottom_res_blocks: int = 3,
        aspp_rates: Sequence[int] = (3, 9),
        head_kernel: Sequence[int] = (3, 3),
        whitening: bool = False,
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 100,
    ):
        super().__init__()
        if mode not in _MODES:
            raise ConfigError(f"generator mode must be one of {_MODES}, got {mode!r}")
        if mask_type not in _MASK_TYPES:
            raise ConfigError(f"generator mask_type must be one of {_MASK_TYPES}, got {mask_type!r}")
        channels = [int(c) for c in encoder_channels]
        if len(channels) < 2 or min(channels) < 1:
            raise ConfigError(f"encoder_channels needs >= 2 positive entries, got {list(encoder_channels)}")
        if res_blocks < 1 or bottom_res_blocks < 0:
            raise ConfigError(f"need res_blocks >= 1 and bottom_res_blocks >= 0, got {res_blocks}, {bottom_res_blocks}")
        kernel, proj_k, up_k, head_k = _pair(kernel_size), _pair(proj_kernel), _pair(up_kernel), _pair(head_kernel)
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0 or proj_k[0] % 2 == 0 or proj_k[1] % 2 == 0:
            raise ConfigError(f"kernel_size and proj_kernel must be odd, got {kernel}, {proj_k}")
        self._config = {
            "mode": mode,
            "mask_type": mask_type,
            "encoder_channels": channels,
            "proj_kernel": list(proj_k),
            "kernel_size": list(kernel),
            "up_kernel": list(up_k),
            "res_blocks": int(res_blocks),
            "bottom_res_blocks": int(bottom_res_blocks),
            "aspp_rates": [int(r) for r in aspp_rates],
            "head_kernel": list(head_k),
            "whitening": bool(whitening),
            "activation": activation,
            "negative_slope": float(negative_slope),
            "n_fft": int(n_fft),
            "win_length": int(win_length),
            "hop_length": int(hop_length),
        }
        self.mode, self.mask_type = mode, mask_type
        self.stft = ComplexSTFT(n_fft, win_length, hop_length)
        # Frequency and frame counts are padded to a multiple of this, so every stride-2 level halves
        # them exactly and the decoder's up-sampling lands on the skip's size.
        self.size_multiple = 2 ** (len(channels) - 1)
        block = {"whitening": whitening, "activation": activation, "negative_slope": negative_slope}
        aspp = {"rates": aspp_rates, **block}

        self.proj = ComplexConv2d(1, channels[0], proj_k, padding=_same(proj_k))
        self.proj_res = nn.Sequential(
            *[ComplexResidualBlock(channels[0], channels[0], kernel, **block) for _ in range(res_blocks)]
        )
        self.down = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            n_res = bottom_res_blocks if level == len(channels) - 2 else res_blocks
            self.down.append(_Down(c_in, c_out, kernel, n_res, block))
        self.bridge = ComplexASPP(channels[-1], channels[-1], **aspp)
        self.up = nn.ModuleList(
            _Up(c_in, c_out, kernel, up_k, res_blocks, block)
            for c_in, c_out in zip(channels[:0:-1], channels[-2::-1])
        )
        self.head_aspp = ComplexASPP(channels[0], channels[0], **aspp)
        self.head = ComplexConv2d(channels[0], 1, head_k, padding=_same(head_k))
        if mode == "mask":
            # Start near a pass-through: M ~ 1 keeps the phase and scales by tanh(1) ~ 0.76, instead of
            # M ~ 0 muting everything, which gives the cycle and identity losses a useless start.
            nn.init.constant_(self.head.bias_real, 1.0)

    #: Run the U-Net on channels-last (NHWC) feature maps when the input is on CPU, where oneDNN's
    #: convolutions are 1.5-3x faster in that layout than channels-first (``benchmarks/speed.py``
    #: measures the whole-model gain). Not used on GPU, nor while tracing for ONNX export.
    channels_last_on_cpu: bool = True

    @property
    def config(self) -> Dict[str, Any]:
        """JSON-serialisable constructor kwargs: ``UpCycleGenerator(**gen.config)`` rebuilds the model."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def from_preset(cls, name: str = "redesign", **overrides: Any) -> "UpCycleGenerator":
        """Builds the ``"redesign"``, ``"redesign_base"`` (``"base"``) or ``"redesign_small"`` (``"small"``)
        generator, with constructor ``overrides`` on top."""
        name = PRESET_ALIASES.get(name, name)
        if name == "paper":
            raise ConfigError("UpCycleGenerator preset 'paper' is now 'redesign'; the authors' network is "
                              "upcycle_se.models.PaperGenerator (build_generator('paper'))")
        if name not in GENERATOR_PRESETS:
            raise ConfigError(f"unknown generator preset {name!r}; choose one of {sorted(GENERATOR_PRESETS)}")
        return cls(**{**GENERATOR_PRESETS[name], **overrides})

    @property
    def unet_dtype(self) -> torch.dtype:
        """The dtype of the U-Net's weights and feature maps (float32 unless :meth:`set_unet_dtype` changed it)."""
        return self.proj.weight_real.dtype

    def set_unet_dtype(self, dtype: torch.dtype) -> "UpCycleGenerator":
        """Runs the U-Net in ``dtype``: ``torch.bfloat16`` for fast inference, or ``torch.float32``.

        Casts the convolution and activation weights, and the feature maps follow (the spectrum is cast
        once on entry, keeping its channels-last layout; the head output is cast back). Kept in float32:
        the STFT/iSTFT, the output mask, the waveform, and the batch norms (folded into the convolutions in
        evaluation mode, then rounded once). For inference only: bf16 weights have no float32 master copy
        to train, and casting back to float32 keeps their rounding (``load_state_dict`` of a float32
        checkpoint restores the weights in either dtype). Returns ``self``.
        """
        if dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"the U-Net runs in float32 or bfloat16, not {dtype}")
        norms = (ComplexBatchNorm2d, nn.BatchNorm2d)
        for name, module in self.named_modules():
            if module is self.stft or name.startswith("stft.") or isinstance(module, norms):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
        return self

    def estimate(self, spec: torch.Tensor) -> torch.Tensor:
        """The U-Net alone: spectrum ``[batch, 2, freq, frames]`` -> raw head output M, same shape.

        On CPU the feature maps are channels-last (see :attr:`channels_last_on_cpu`); the numbers are
        the same either way (to float rounding).
        """
        n_freq, n_frames = spec.shape[-2], spec.shape[-1]
        m = self.size_multiple
        x = F.pad(spec, (0, (-n_frames) % m, 0, (-n_freq) % m))
        # Under bf16 autocast too: the one oneDNN backward that crashes on channels-last (grouped dilated
        # convolutions) is routed around in ComplexConv2d.conv.
        if self.channels_last_on_cpu and x.device.type == "cpu" and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(self.unet_dtype)  # no-op in fp32; one cast (layout kept) after set_unet_dtype(bfloat16)
        h = self.proj_res(self.proj(x))
        skips: List[torch.Tensor] = []
        for down in self.down:
            skips.append(h)
            h = down(h)
        h = self.bridge(h)
        for up in self.up:
            h = up(h, skips.pop())
        out = self.head(self.head_aspp(h))
        return out[:, :, :n_freq, :n_frames].to(spec.dtype)  # the mask is applied in the spectrum's dtype

    def apply_output(self, spec: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """Turns the head output ``est`` into the output spectrum given the input ``spec`` (both ``[B, 2, F, N]``).

        In mask mode the magnitude gain ``tanh(|M|)`` is clamped from below at :attr:`gain_floor` when
        :attr:`max_attenuation_db` is set (:mod:`upcycle_se.models.attenuation`).
        """
        if self.mode == "map":
            return est
        mr, mi = est[:, 0:1], est[:, 1:2]
        mag = torch.sqrt(mr * mr + mi * mi + 1e-8)
        bounded = torch.tanh(mag)
        floor = self.gain_floor
        if floor is not None:
            bounded = bounded.clamp_min(floor)
        if self.mask_type == "magnitude":
            return bounded * spec
        xr, xi = spec[:, 0:1], spec[:, 1:2]
        gain = bounded / mag  # tanh(|M|) * (M / |M|): bounded magnitude, rotation by angle(M)
        return torch.cat([gain * (mr * xr - mi * xi), gain * (mr * xi + mi * xr)], dim=1)

    def forward_with_spec(self, wav: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[batch, time]`` -> (waveform ``[batch, time]``, output spectrum ``[batch, 2, freq, frames]``)."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform [batch, time], got shape {tuple(wav.shape)}")
        spec = self.stft.stft(wav)
        out_spec = self.apply_output(spec, self.estimate(spec))
        return self.stft.istft(out_spec, length=wav.shape[-1]), out_spec

    def forward(self, wav: torch.Tensor, return_spec: bool = False):
        """``[batch, time]`` -> ``[batch, time]`` (same length); with ``return_spec`` also the spectrum.

        ``return_spec`` goes through ``forward`` (not only :meth:`forward_with_spec`) so that wrappers
        such as DistributedDataParallel, which only intercept ``forward``, see every call.
        """
        out, spec = self.forward_with_spec(wav)
        return (out, spec) if return_spec else out


def export_onnx(generator: nn.Module, path, opset_version: int = 17, example_length: int = 16000) -> None:
    """Writes ``generator`` (eval mode) as ONNX with dynamic batch and time axes.

    Input ``wav`` ``[batch, time]`` float32, output ``enhanced`` ``[batch, time]``. The STFT is switched
    to its real-valued ``conv`` back end for the export (ONNX has no complex tensors) and restored.
    """
    # ONNX has no complex tensors: a switchable STFT goes to its real-valued conv back end for the export.
    switchable = hasattr(generator.stft, "backend")
    was_training, backend = generator.training, getattr(generator.stft, "backend", None)
    generator.eval()
    if switchable:
        generator.stft.backend = "conv"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warns about every shape read and the legacy exporter about itself: both expected.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                generator,
                (torch.zeros(1, example_length),),
                str(path),
                dynamo=False,  # the torch.export-based exporter needs onnxscript, which is not a dependency
                opset_version=opset_version,
                input_names=["wav"],
                output_names=["enhanced"],
                dynamic_axes={"wav": {0: "batch", 1: "time"}, "enhanced": {0: "batch", 1: "time"}},
            )
    finally:
        if switchable:
            generator.stft.backend = backend
        generator.train(was_training)
