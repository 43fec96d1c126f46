"""CPU fast paths and workarounds of the complex layers, kept apart from their maths.

Each function here computes the same numbers as the plain PyTorch expression it stands for; it only
changes how they are computed on CPU (oneDNN kernels, memory layout, buffers), or routes around a kernel
that crashes. :mod:`upcycle_se.nnet.complex` calls them.

- Memory layout: :func:`is_channels_last`, :func:`channel_dim_last`. On CPU, oneDNN convolutions run
  much faster channels-last, so :class:`upcycle_se.models.UpCycleGenerator` feeds the layers
  channels-last maps there and the layers keep whichever layout they are given.
- 1x1 convolutions: :func:`onednn_pointwise_ok`, :func:`onednn_pointwise_conv`.
- bf16 training: :func:`bf16_backward_crashes`, :func:`conv2d_fp32`.
- Evaluation: :func:`fold_into_conv` (a batch norm merged into the preceding convolution) and
  :func:`activate` (activations in place when no gradient is recorded).

Authors
 * upcycle-se contributors 2025
"""

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "is_channels_last",
    "channel_dim_last",
    "onednn_pointwise_ok",
    "onednn_pointwise_conv",
    "bf16_backward_crashes",
    "conv2d_fp32",
    "fold_into_conv",
    "activate",
]


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (NHWC) rather than channels-first.

    The layers keep whichever layout they are given: on CPU, oneDNN convolutions run markedly faster
    channels-last (see ``benchmarks/RESULTS.md``), so :class:`upcycle_se.models.UpCycleGenerator` feeds
    them channels-last maps there.
    """
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last)


def channel_dim_last(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """A view with the channel axis where the memory has it: ``(NHWC view, -1)`` for a channels-last
    map ``[batch, channels, freq, frames]``, ``(x, 1)`` otherwise. Channel reorders done on the view keep
    the layout, and a permute back (``.permute(0, 3, 1, 2)``) is free."""
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1), -1
    return x, 1


def onednn_pointwise_ok(x: torch.Tensor) -> bool:
    """Whether a 1x1 convolution of ``x`` may call oneDNN directly: float32 CPU maps, oneDNN enabled,
    and not while tracing/compiling (exporters and compilers should see a plain ``conv2d``)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def onednn_pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          groups: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for a 1x1 ``weight`` at stride 1 without padding,
    computed by oneDNN (only where :func:`onednn_pointwise_ok`).

    torch sends single-threaded 1x1 convolutions of small batches to its generic GEMM path, which is much
    slower than oneDNN's on AVX-512 CPUs; calling oneDNN directly gives the same result.
    """
    return torch.mkldnn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], groups)


def bf16_backward_crashes(x: torch.Tensor, weight: torch.Tensor, groups: int, dilation: Tuple[int, int]) -> bool:
    """Whether a convolution of ``x`` with ``weight`` would reach a oneDNN bf16 backward that crashes.

    That backward (seen with torch 2.14.1 on AVX512-BF16) is the one of a grouped *and* dilated,
    channels-last, bf16 convolution (autocast or bf16 tensors) with gradients recorded. It ends the
    process with a segmentation fault, not an exception, so such a convolution (the ASPP branches only)
    is routed to :func:`conv2d_fp32`. Every dilation is routed, as the crashing range may depend on the
    shape.
    """
    if groups == 1 or max(dilation) == 1 or x.device.type != "cpu":
        return False
    if not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)):
        return False
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                          and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    return bf16 and is_channels_last(x)


def conv2d_fp32(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Tuple[int, int],
                padding: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> torch.Tensor:
    """``F.conv2d`` computed in float32 outside autocast, returned in ``x``'s dtype.

    The channels-last layout is kept: oneDNN's fp32 kernel for it is fast and sound, whereas bf16 on a
    contiguous copy would fall back to oneDNN's slow reference kernel.
    """
    with torch.autocast("cpu", enabled=False):
        y = F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), stride, padding,
                     dilation, groups)
    return y.to(x.dtype)


def fold_into_conv(weight: torch.Tensor, bias: Optional[torch.Tensor], norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """The real convolution ``(weight, bias)`` followed by ``norm`` as one convolution.

    ``weight`` is a block weight ``[2*C_out, ., kh, kw]`` whose output rows are in the usual
    (re..., im...) order; ``norm`` is a :class:`~upcycle_se.nnet.complex.ComplexBatchNorm2d` that is
    :meth:`~upcycle_se.nnet.complex.ComplexBatchNorm2d.foldable`. Differentiable, so the folded form also
    serves evaluation-mode passes that need gradients.
    """
    scale, shift = norm.folded_affine()
    # In the weight's dtype: a bf16 U-Net keeps its norms' statistics in float32 and rounds the product once.
    folded = (weight * scale.view(-1, 1, 1, 1)).to(weight.dtype)
    return folded, (shift if bias is None else bias * scale + shift).to(weight.dtype)


def activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` for a freshly computed ``x``; in place when ``act`` is a plain LeakyReLU (no forward of
    its own) and no gradient is recorded, which saves a buffer of ``x``'s size."""
    if isinstance(act, nn.LeakyReLU) and type(act).forward is nn.LeakyReLU.forward and not torch.is_grad_enabled():
        return F.leaky_relu_(x, act.negative_slope)
    return act(x)
