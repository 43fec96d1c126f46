"""Complex-valued 2-D layers for the Up-Cycle-SENet generators (DCCRN lineage).

Layout: a complex feature map is a real tensor ``[batch, 2*C, freq, frames]`` with the real parts in
channels ``[:C]`` and the imaginary parts in ``[C:]``; every constructor counts *complex* channels (C).
Keeping real tensors (not ``torch.complex64``) lets the layers run everywhere real tensors do: the
legacy ONNX exporter, weight decay, mixed optimisers.

SpeechBrain's own ``speechbrain.nnet.complex_networks`` puts channels last, interleaves real and
imaginary parts per feature and has no transposed convolution, so it cannot build a U-Net decoder;
these layers are written for the channels-first U-Net instead.

The layers:

- :class:`ComplexConv2d`, :class:`ComplexConvTranspose2d`: true complex (transposed) convolution
  ``(Wr + iWi)(xr + ixi)``, computed as ONE real convolution with the block weight
  ``[[Wr, -Wi], [Wi, Wr]]`` (per group);
- :class:`ComplexBatchNorm2d`: naive (real and imaginary parts normalised apart) or whitening
  (Trabelsi et al., "Deep Complex Networks", ICLR 2018);
- :class:`ComplexLeakyReLU`, :class:`ComplexPReLU`: split activations;
- :class:`ComplexDepthwiseSeparableConv2d`;
- the two extended modules of Up-Cycle-SENet: :class:`ComplexResidualBlock` (pre-activation) and
  :class:`ComplexASPP` (atrous spatial pyramid pooling).

How they run fast on CPU (oneDNN calls, channels-last layouts, batch norms folded into convolutions,
in-place activations) and the bf16 workaround live in :mod:`upcycle_se.nnet.cpu_fastpaths`; this module
holds the maths.

Authors
 * upcycle-se contributors 2025
"""

import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from upcycle_se.nnet.cpu_fastpaths import (
    activate,
    bf16_backward_crashes,
    channel_dim_last,
    conv2d_fp32,
    fold_into_conv,
    is_channels_last,
    onednn_pointwise_conv,
    onednn_pointwise_ok,
)

IntPair = Union[int, Tuple[int, int]]

__all__ = [
    "is_channels_last",
    "complex_split",
    "complex_cat",
    "interleave_groups",
    "deinterleave_groups",
    "ComplexConv2d",
    "ComplexConvTranspose2d",
    "ComplexBatchNorm2d",
    "fold_into_conv",
    "ComplexLeakyReLU",
    "ComplexPReLU",
    "complex_activation",
    "ComplexDepthwiseSeparableConv2d",
    "ComplexResidualBlock",
    "ComplexASPP",
]


def _pair(value: IntPair) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _same_padding(kernel_size: IntPair, dilation: IntPair = 1) -> Tuple[int, int]:
    """Padding that keeps the size at stride 1 for odd kernels."""
    k, d = _pair(kernel_size), _pair(dilation)
    return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2


def complex_split(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Splits ``[batch, 2*C, ...]`` into its real and imaginary parts, each ``[batch, C, ...]``."""
    if x.shape[1] % 2:
        raise ValueError(f"a complex feature map needs an even channel count, got {x.shape[1]}")
    return x.chunk(2, dim=1)


def complex_cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenates complex feature maps along channels, keeping reals first then imaginaries.

    Channels-last inputs give a channels-last result (one copy either way).

    Example
    -------
    >>> a, b = torch.ones(1, 2, 3, 3), torch.zeros(1, 4, 3, 3)
    >>> complex_cat([a, b])[0, :, 0, 0].tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    """
    if all(is_channels_last(t) for t in tensors):
        views = [t.permute(0, 2, 3, 1) for t in tensors]
        for t in tensors:
            complex_split(t)  # validates the channel counts
        parts = [v.chunk(2, dim=-1) for v in views]
        return torch.cat([p[0] for p in parts] + [p[1] for p in parts], dim=-1).permute(0, 3, 1, 2)
    parts = [complex_split(t) for t in tensors]
    return torch.cat([p[0] for p in parts] + [p[1] for p in parts], dim=1)


def interleave_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, (re|im) x groups x c, ...]`` -> ``[B, groups x (re|im) x c, ...]`` so that a real grouped
    convolution sees both parts of its group (identity for one group; keeps a channels-last layout)."""
    if groups == 1:
        return x
    v, dim = channel_dim_last(x)
    lead, ch, tail = v.shape[:dim % v.dim()], v.shape[dim], v.shape[dim % v.dim() + 1:]
    d = len(lead)
    out = v.reshape(*lead, 2, groups, ch // (2 * groups), *tail).transpose(d, d + 1).reshape(v.shape)
    return out.permute(0, 3, 1, 2) if dim == -1 else out


def deinterleave_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`interleave_groups`."""
    if groups == 1:
        return x
    v, dim = channel_dim_last(x)
    lead, ch, tail = v.shape[:dim % v.dim()], v.shape[dim], v.shape[dim % v.dim() + 1:]
    d = len(lead)
    out = v.reshape(*lead, groups, 2, ch // (2 * groups), *tail).transpose(d, d + 1).reshape(v.shape)
    return out.permute(0, 3, 1, 2) if dim == -1 else out


# The names these helpers had before they were public.
_interleave_groups, _deinterleave_groups = interleave_groups, deinterleave_groups


class _ComplexConvBase(nn.Module):
    """Holds ``weight_real``/``weight_imag`` (+ complex bias) and builds the real block weight."""

    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        groups: int,
        bias: bool,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups = groups
        if self.transposed:  # torch's layout for transposed convolutions: [in, out/groups, kh, kw]
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight_real = nn.Parameter(torch.empty(shape))
        self.weight_imag = nn.Parameter(torch.empty(shape))
        if bias:
            self.bias_real = nn.Parameter(torch.zeros(out_channels))
            self.bias_imag = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias_real", None)
            self.register_parameter("bias_imag", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each complex output sums 2x as many real products as a real conv: halve the variance
        # (Glorot-style bound as in torch's default init, with a doubled fan-in).
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        if self.transposed:
            fan_in = (self.out_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(2 * fan_in)
        nn.init.uniform_(self.weight_real, -bound, bound)
        nn.init.uniform_(self.weight_imag, -bound, bound)

    def block_weight(self) -> torch.Tensor:
        """The real weight of the equivalent grouped real convolution (channels interleaved per group)."""
        g = self.groups
        wr = self.weight_real.reshape(g, -1, *self.weight_real.shape[1:])
        wi = self.weight_imag.reshape(g, -1, *self.weight_imag.shape[1:])
        if self.transposed:  # rows are inputs (re, im), columns outputs (re, im)
            top, bottom = torch.cat([wr, wi], dim=2), torch.cat([-wi, wr], dim=2)
        else:  # rows are outputs (re, im), columns inputs (re, im)
            top, bottom = torch.cat([wr, -wi], dim=2), torch.cat([wi, wr], dim=2)
        w = torch.stack([top, bottom], dim=1)  # [g, 2, rows/g, 2*cols/g, kh, kw]
        return w.reshape(-1, *w.shape[3:])

    def block_bias(self):
        if self.bias_real is None:
            return None
        g = self.groups
        return torch.stack([self.bias_real.reshape(g, -1), self.bias_imag.reshape(g, -1)], dim=1).reshape(-1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias_real is not None}"
        )


class ComplexConv2d(_ComplexConvBase):
    """Complex 2-D convolution ``(Wr + iWi) * (xr + ixi)``.

    Arguments
    ---------
    in_channels, out_channels : int
        Complex channel counts (the real tensors have twice as many).
    kernel_size, stride, padding, dilation : int or (int, int)
        As in :class:`torch.nn.Conv2d`, over ``(freq, frames)``.
    groups : int
        Complex groups (``groups == in_channels`` is a depthwise convolution).
    bias : bool
        Adds a complex bias.

    Example
    -------
    >>> conv = ComplexConv2d(3, 8, kernel_size=3, padding=1)
    >>> conv(torch.randn(2, 6, 17, 10)).shape  # [batch, 2*C, freq, frames]
    torch.Size([2, 16, 17, 10])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*in_channels, freq, frames]`` -> ``[batch, 2*out_channels, freq', frames']``."""
        y = self.conv(interleave_groups(x, self.groups), self.block_weight(), self.block_bias())
        return deinterleave_groups(y, self.groups)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: Union[torch.Tensor, None]) -> torch.Tensor:
        """The real convolution with this layer's geometry and the given (block) ``weight`` and ``bias``
        (on CPU through the fast paths of :mod:`upcycle_se.nnet.cpu_fastpaths`, same numbers)."""
        if self._pointwise and onednn_pointwise_ok(x):
            return onednn_pointwise_conv(x, weight, bias, self.groups)
        if self._bf16_backward_crashes(x, weight):
            return conv2d_fp32(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _bf16_backward_crashes(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        """:func:`~upcycle_se.nnet.cpu_fastpaths.bf16_backward_crashes` for this layer's geometry."""
        return bf16_backward_crashes(x, weight, self.groups, self.dilation)

    @property
    def _pointwise(self) -> bool:
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)


class ComplexConvTranspose2d(_ComplexConvBase):
    """Complex 2-D transposed convolution (the U-Net decoder's up-sampling).

    Arguments are those of :class:`ComplexConv2d` plus ``output_padding`` (as in
    :class:`torch.nn.ConvTranspose2d`).

    Example
    -------
    >>> up = ComplexConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1)
    >>> up(torch.randn(2, 16, 9, 5)).shape
    torch.Size([2, 8, 18, 10])
    """

    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntPair = 1,
    ):
        self.output_padding = _pair(output_padding)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*in_channels, freq, frames]`` -> ``[batch, 2*out_channels, freq', frames']``."""
        y = F.conv_transpose2d(
            interleave_groups(x, self.groups),
            self.block_weight(),
            self.block_bias(),
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )
        return deinterleave_groups(y, self.groups)


class ComplexBatchNorm2d(nn.Module):
    """Complex batch normalisation, naive or whitening.

    - ``whitening=False`` (naive, as in DCCRN's default): real and imaginary parts are normalised as
      independent real channels (one :class:`torch.nn.BatchNorm2d` over ``2*C`` channels).
    - ``whitening=True`` (Trabelsi et al. 2018): each complex channel is centred and multiplied by the
      inverse square root of its 2x2 real/imaginary covariance, so its parts are decorrelated with unit
      variance; then a learned symmetric 2x2 scale ``gamma`` (initialised to ``diag(1/sqrt2)``) and a
      complex shift ``beta``. Running mean and covariance are tracked for evaluation.

    Arguments
    ---------
    num_features : int
        Complex channels C (input ``[batch, 2*C, freq, frames]``).
    whitening : bool
        Selects the whitening variant.
    eps : float
        Added to the variances (the covariance diagonal).
    momentum : float
        Running-statistics update factor, as in :class:`torch.nn.BatchNorm2d`.
    affine : bool
        Learns ``gamma``/``beta`` (without it the whitened output has identity covariance).

    Example
    -------
    >>> bn = ComplexBatchNorm2d(4, whitening=True)
    >>> bn(torch.randn(3, 8, 5, 6)).shape
    torch.Size([3, 8, 5, 6])
    """

    def __init__(
        self,
        num_features: int,
        whitening: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
    ):
        super().__init__()
        self.num_features, self.whitening = num_features, whitening
        self.eps, self.momentum, self.affine = eps, momentum, affine
        if not whitening:
            self.bn = nn.BatchNorm2d(2 * num_features, eps=eps, momentum=momentum, affine=affine)
            return
        if affine:
            # gamma = [[g_rr, g_ri], [g_ri, g_ii]] stored as rows (rr, ii, ri); beta = (re, im).
            self.weight = nn.Parameter(torch.empty(3, num_features))
            self.bias = nn.Parameter(torch.empty(2, num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(2, num_features))
        self.register_buffer("running_cov", torch.empty(3, num_features))  # rows (Vrr, Vii, Vri)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.whitening:
            self.bn.reset_parameters()
            return
        self.running_mean.zero_()
        self.running_cov.zero_()
        self.running_cov[:2] = 1.0
        self.num_batches_tracked.zero_()
        if self.affine:
            with torch.no_grad():
                self.weight.zero_()
                self.weight[:2] = 1.0 / math.sqrt(2.0)
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*C, freq, frames]`` -> same shape."""
        if not self.whitening:
            return self.bn(x)
        xr, xi = complex_split(x)
        view = (1, -1, 1, 1)
        if self.training:
            dims = (0, 2, 3)
            mean_r, mean_i = xr.mean(dims), xi.mean(dims)
            cr, ci = xr - mean_r.view(view), xi - mean_i.view(view)
            vrr, vii, vri = (cr * cr).mean(dims), (ci * ci).mean(dims), (cr * ci).mean(dims)
            with torch.no_grad():
                n = x.numel() // x.shape[1]
                unbias = n / max(n - 1, 1)
                self.running_mean.lerp_(torch.stack([mean_r, mean_i]), self.momentum)
                self.running_cov.lerp_(torch.stack([vrr, vii, vri]) * unbias, self.momentum)
                self.num_batches_tracked += 1
        else:
            cr = xr - self.running_mean[0].view(view)
            ci = xi - self.running_mean[1].view(view)
            vrr, vii, vri = self.running_cov[0], self.running_cov[1], self.running_cov[2]
        vrr, vii = vrr + self.eps, vii + self.eps
        # Closed-form inverse square root of the SPD matrix [[vrr, vri], [vri, vii]].
        s = torch.sqrt(vrr * vii - vri * vri)
        t = torch.sqrt(vrr + vii + 2.0 * s)
        inv = 1.0 / (s * t)
        wrr, wii, wri = ((vii + s) * inv).view(view), ((vrr + s) * inv).view(view), (-vri * inv).view(view)
        yr = wrr * cr + wri * ci
        yi = wri * cr + wii * ci
        if self.affine:
            grr, gii, gri = self.weight[0].view(view), self.weight[1].view(view), self.weight[2].view(view)
            yr, yi = (
                grr * yr + gri * yi + self.bias[0].view(view),
                gri * yr + gii * yi + self.bias[1].view(view),
            )
        return torch.cat([yr, yi], dim=1).to(x.dtype)  # float32 statistics; the output keeps the input's dtype

    def foldable(self) -> bool:
        """True when this norm is a fixed per-real-channel affine map (naive, evaluation mode, running
        statistics), which :func:`fold_into_conv` can merge into the preceding convolution."""
        return not self.whitening and not self.training and self.bn.running_mean is not None

    def folded_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` per real channel with ``self(x) == x * scale + shift`` (see :meth:`foldable`)."""
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        return scale, shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, whitening={self.whitening}, eps={self.eps}, momentum={self.momentum}"


class ComplexLeakyReLU(nn.LeakyReLU):
    """Split LeakyReLU: applied to the real and the imaginary part separately (``[batch, 2*C, ...]``)."""

    def __init__(self, negative_slope: float = 0.2):
        super().__init__(negative_slope)


class ComplexPReLU(nn.PReLU):
    """Split PReLU: one learned slope per real and per imaginary channel (``2*C`` slopes)."""

    def __init__(self, channels: int, init: float = 0.25):
        super().__init__(num_parameters=2 * channels, init=init)


def complex_activation(kind: str, channels: int, negative_slope: float = 0.2) -> nn.Module:
    """Builds ``"leaky_relu"`` (:class:`ComplexLeakyReLU`) or ``"prelu"`` (:class:`ComplexPReLU`)."""
    if kind == "leaky_relu":
        return ComplexLeakyReLU(negative_slope)
    if kind == "prelu":
        return ComplexPReLU(channels)
    raise ValueError(f"activation must be 'leaky_relu' or 'prelu', got {kind!r}")


class ComplexDepthwiseSeparableConv2d(nn.Module):
    """Depthwise complex convolution (one complex filter per channel) then a 1x1 complex convolution.

    Example
    -------
    >>> conv = ComplexDepthwiseSeparableConv2d(4, 6, kernel_size=3, padding=3, dilation=3)
    >>> conv(torch.randn(2, 8, 20, 12)).shape
    torch.Size([2, 12, 20, 12])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.depthwise = ComplexConv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=False
        )
        self.pointwise = ComplexConv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*in_channels, freq, frames]`` -> ``[batch, 2*out_channels, freq', frames']``."""
        return self.forward_interleaved(interleave_groups(x, self.depthwise.groups))

    def forward_interleaved(self, x: torch.Tensor, norm: Union[ComplexBatchNorm2d, None] = None) -> torch.Tensor:
        """:meth:`forward` on an input already in the depthwise layout ``(re_0, im_0, re_1, im_1, ...)``,
        followed by ``norm`` when one is given (merged into the pointwise convolution when foldable).

        The depthwise output stays in that layout: instead of reordering it, the pointwise weight's
        input columns are reordered (a permutation of a small weight, not of a feature map).
        """
        dw, pw = self.depthwise, self.pointwise
        h = dw.conv(x, dw.block_weight(), None)
        weight, bias = interleave_groups(pw.block_weight(), dw.groups), pw.block_bias()  # reorders columns (dim 1)
        if norm is not None and norm.foldable():
            return pw.conv(h, *fold_into_conv(weight, bias, norm))
        h = pw.conv(h, weight, bias)
        return h if norm is None else norm(h)


class ComplexResidualBlock(nn.Module):
    """Pre-activation complex residual block: (BN -> activation -> complex conv) twice, plus a 1x1
    complex convolution on the shortcut when the channel count changes (the identity otherwise).
    Keeps ``(freq, frames)``.

    Arguments
    ---------
    in_channels, out_channels : int
        Complex channels.
    kernel_size : int or (int, int)
        Odd kernel of both convolutions.
    whitening : bool
        Whitening complex batch norm (else naive).
    activation : str
        ``"leaky_relu"`` or ``"prelu"``.
    negative_slope : float
        LeakyReLU slope.

    Example
    -------
    >>> block = ComplexResidualBlock(4, 8)
    >>> block(torch.randn(2, 8, 9, 7)).shape
    torch.Size([2, 16, 9, 7])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        whitening: bool = False,
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        pad = _same_padding(kernel_size)
        self.norm1 = ComplexBatchNorm2d(in_channels, whitening=whitening)
        self.act1 = complex_activation(activation, in_channels, negative_slope)
        self.conv1 = ComplexConv2d(in_channels, out_channels, kernel_size, padding=pad)
        self.norm2 = ComplexBatchNorm2d(out_channels, whitening=whitening)
        self.act2 = complex_activation(activation, out_channels, negative_slope)
        self.conv2 = ComplexConv2d(out_channels, out_channels, kernel_size, padding=pad)
        # As in pre-activation ResNets, the shortcut is the identity when the channel counts match.
        self.shortcut = ComplexConv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*in_channels, freq, frames]`` -> ``[batch, 2*out_channels, freq, frames]``."""
        h = activate(self.act1, self.norm1(x))
        if self.norm2.foldable():  # evaluation: norm2 merged into conv1
            h = self.conv1.conv(h, *fold_into_conv(self.conv1.block_weight(), self.conv1.block_bias(), self.norm2))
        else:
            h = self.norm2(self.conv1(h))
        h = self.conv2(activate(self.act2, h))
        return h.add_(self.shortcut(x))  # in place on conv2's fresh output (autograd-safe)


class ComplexASPP(nn.Module):
    """Complex atrous spatial pyramid pooling.

    Branches: one depthwise-separable atrous complex conv per rate (-> BN -> activation) and a global
    pooling branch (complex mean over ``(freq, frames)`` -> 1x1 complex conv -> activation, broadcast
    back). The input and all branches are concatenated and projected by a 1x1 complex conv (-> BN ->
    activation). The global branch has no BN: with one value per channel and item its batch statistics
    would be degenerate.

    Arguments
    ---------
    in_channels, out_channels : int
        Complex channels.
    rates : sequence of int
        Dilation rates of the atrous branches (same rate on both axes).
    branch_channels : int or None
        Complex channels of each branch (default: ``in_channels``).
    kernel_size : int
        Odd kernel of the atrous branches.
    whitening, activation, negative_slope
        As in :class:`ComplexResidualBlock`.

    Example
    -------
    >>> aspp = ComplexASPP(8, 4, rates=(3, 9))
    >>> aspp(torch.randn(2, 16, 33, 20)).shape
    torch.Size([2, 8, 33, 20])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (3, 9),
        branch_channels: Union[int, None] = None,
        kernel_size: int = 3,
        whitening: bool = False,
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        branch_channels = branch_channels or in_channels
        self.atrous = nn.ModuleList()
        for rate in rates:
            self.atrous.append(
                nn.Sequential(
                    ComplexDepthwiseSeparableConv2d(
                        in_channels,
                        branch_channels,
                        kernel_size,
                        padding=_same_padding(kernel_size, rate),
                        dilation=rate,
                        bias=False,
                    ),
                    ComplexBatchNorm2d(branch_channels, whitening=whitening),
                    complex_activation(activation, branch_channels, negative_slope),
                )
            )
        self.pool_conv = ComplexConv2d(in_channels, branch_channels, 1)
        self.pool_act = complex_activation(activation, branch_channels, negative_slope)
        cat_channels = in_channels + branch_channels * (len(rates) + 1)
        self.project = nn.Sequential(
            ComplexConv2d(cat_channels, out_channels, 1, bias=False),
            ComplexBatchNorm2d(out_channels, whitening=whitening),
            complex_activation(activation, out_channels, negative_slope),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 2*in_channels, freq, frames]`` -> ``[batch, 2*out_channels, freq, frames]``.

        Computed without materialising the broadcast pooled branch: the projection is linear, so its
        share of the pooled branch is a per-item bias (a 1x1 convolution of ``[batch, ., 1, 1]``) added
        to the projection of the other branches. The atrous branches share one depthwise reordering.
        """
        pooled = activate(self.pool_act, self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))
        branches = [x]
        if len(self.atrous):
            x_dw = interleave_groups(x, x.shape[1] // 2)
            for sep, norm, act in self.atrous:
                branches.append(activate(act, sep.forward_interleaved(x_dw, norm)))
            del x_dw
        cat = complex_cat(branches)
        del branches  # only the concatenation is needed from here on (peak memory)
        proj, norm, act = self.project
        weight = proj.block_weight()  # columns: real parts of [x, atrous..., pooled], then imaginary parts
        n_in, n_pool = proj.in_channels, pooled.shape[1] // 2
        w_rest = torch.cat([weight[:, : n_in - n_pool], weight[:, n_in: 2 * n_in - n_pool]], dim=1)
        w_pool = torch.cat([weight[:, n_in - n_pool: n_in], weight[:, 2 * n_in - n_pool:]], dim=1)
        if norm.foldable():  # evaluation: the norm merged into the projection (its shift as the bias)
            w_rest, shift = fold_into_conv(w_rest, None, norm)
            w_pool = fold_into_conv(w_pool, None, norm)[0]
            y = proj.conv(cat, w_rest, shift)
            return activate(act, y.add_(proj.conv(pooled, w_pool, None)))
        y = proj.conv(cat, w_rest, None).add_(proj.conv(pooled, w_pool, None))
        return activate(act, norm(y))
