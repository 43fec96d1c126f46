"""Complex-valued layers: true complex arithmetic, batch norm statistics, the extended modules."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from upcycle_se.nnet.complex import (
    ComplexASPP,
    ComplexBatchNorm2d,
    ComplexConv2d,
    ComplexConvTranspose2d,
    ComplexDepthwiseSeparableConv2d,
    ComplexLeakyReLU,
    ComplexPReLU,
    ComplexResidualBlock,
    complex_cat,
    complex_split,
)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2C, H, W]`` real layout -> ``[B, C, H, W]`` complex64."""
    re, im = complex_split(x)
    return torch.complex(re, im)


def to_real(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.real, z.imag], dim=1)


def layer_weight(layer) -> torch.Tensor:
    return torch.complex(layer.weight_real.detach(), layer.weight_imag.detach())


def layer_bias(layer):
    if layer.bias_real is None:
        return None
    return torch.complex(layer.bias_real.detach(), layer.bias_imag.detach())


def randomise_bias(layer) -> None:
    with torch.no_grad():
        layer.bias_real.normal_()
        layer.bias_imag.normal_()


@pytest.mark.parametrize(
    "cin, cout, kwargs",
    [
        (3, 5, dict(kernel_size=3, padding=1)),
        (4, 6, dict(kernel_size=(5, 7), stride=(2, 1), padding=(2, 3), dilation=(1, 2))),
        (4, 6, dict(kernel_size=3, stride=2, padding=1, groups=2)),
        (6, 6, dict(kernel_size=3, padding=3, dilation=3, groups=6)),  # depthwise
    ],
)
def test_conv_matches_native_complex_convolution(cin, cout, kwargs):
    torch.manual_seed(0)
    layer = ComplexConv2d(cin, cout, **kwargs)
    randomise_bias(layer)
    x = torch.randn(2, 2 * cin, 11, 9)
    native = F.conv2d(
        to_complex(x),
        layer_weight(layer),
        layer_bias(layer),
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
    )
    out = layer(x)
    assert out.shape == (2, 2 * cout, *native.shape[2:])
    torch.testing.assert_close(out, to_real(native), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "cin, cout, kwargs",
    [
        (3, 5, dict(kernel_size=4, stride=2, padding=1)),
        (4, 2, dict(kernel_size=3, stride=2, padding=1, output_padding=1, groups=2)),
        (2, 3, dict(kernel_size=(3, 5), stride=(1, 2), padding=(1, 2), output_padding=(0, 1))),
    ],
)
def test_conv_transpose_matches_native_complex_convolution(cin, cout, kwargs):
    torch.manual_seed(1)
    layer = ComplexConvTranspose2d(cin, cout, **kwargs)
    randomise_bias(layer)
    x = torch.randn(2, 2 * cin, 7, 6)
    native = F.conv_transpose2d(
        to_complex(x),
        layer_weight(layer),
        layer_bias(layer),
        stride=layer.stride,
        padding=layer.padding,
        output_padding=layer.output_padding,
        groups=layer.groups,
    )
    torch.testing.assert_close(layer(x), to_real(native), atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout=st.integers(1, 4),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    h=st.integers(3, 8),
    w=st.integers(3, 8),
    seed=st.integers(0, 2**16),
)
def test_conv_is_complex_linear(cin, cout, k, stride, h, w, seed):
    """Bias-free: f(i x) = i f(x) and f(a x + b y) = a f(x) + b f(y) for complex a, b."""
    torch.manual_seed(seed)
    conv = ComplexConv2d(cin, cout, k, stride=stride, bias=False)
    up = ComplexConvTranspose2d(cin, cout, k, stride=stride, bias=False)
    x, y = torch.randn(1, 2 * cin, h, w), torch.randn(1, 2 * cin, h, w)
    a, b = complex(0.3, -1.2), complex(-0.7, 0.4)
    for layer in (conv, up):
        fx, fy = to_complex(layer(x)), to_complex(layer(y))
        times_i = to_complex(layer(to_real(1j * to_complex(x))))
        torch.testing.assert_close(times_i, 1j * fx, atol=1e-5, rtol=1e-5)
        mixed = to_complex(layer(to_real(a * to_complex(x) + b * to_complex(y))))
        torch.testing.assert_close(mixed, a * fx + b * fy, atol=1e-5, rtol=1e-5)


def test_conv_multiplying_input_by_i_rotates_output_not_copies_it():
    """Guards the test above: a real conv applied part-wise would also be i-equivariant, so check a
    single real input channel produces an imaginary output through W_imag."""
    conv = ComplexConv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight_real.fill_(2.0)
        conv.weight_imag.fill_(3.0)
    x = torch.zeros(1, 2, 1, 1)
    x[0, 0] = 1.0  # 1 + 0i
    assert conv(x).flatten().tolist() == [2.0, 3.0]  # (2 + 3i) * 1
    x = torch.zeros(1, 2, 1, 1)
    x[0, 1] = 1.0  # 0 + 1i
    assert conv(x).flatten().tolist() == [-3.0, 2.0]  # (2 + 3i) * i


def test_complex_cat_and_split_keep_the_layout():
    a = torch.arange(4.0).view(1, 4, 1, 1)  # re [0, 1], im [2, 3]
    b = torch.arange(10.0, 12.0).view(1, 2, 1, 1)  # re [10], im [11]
    cat = complex_cat([a, b])
    assert cat.flatten().tolist() == [0.0, 1.0, 10.0, 2.0, 3.0, 11.0]
    re, im = complex_split(cat)
    assert re.flatten().tolist() == [0.0, 1.0, 10.0] and im.flatten().tolist() == [2.0, 3.0, 11.0]
    with pytest.raises(ValueError):
        complex_split(torch.zeros(1, 3, 1, 1))


def correlated_input(n_channels: int = 3, batch: int = 16) -> torch.Tensor:
    """Complex channels with non-zero means, unequal variances and strong real/imag correlation."""
    torch.manual_seed(2)
    u, v = torch.randn(batch, n_channels, 12, 10), torch.randn(batch, n_channels, 12, 10)
    scale = torch.tensor([1.0, 3.0, 0.3]).view(1, -1, 1, 1)[:, :n_channels]
    re = 2.0 + scale * u
    im = -1.0 + scale * (0.9 * u + 0.4 * v)
    return torch.cat([re, im], dim=1)


def channel_stats(y: torch.Tensor):
    """Per complex channel: mean (re, im) [C, 2] and 2x2 covariance [C, 2, 2]."""
    re, im = complex_split(y)
    n_ch = re.shape[1]
    parts = torch.stack([re.transpose(0, 1).reshape(n_ch, -1), im.transpose(0, 1).reshape(n_ch, -1)], dim=1)
    mean = parts.mean(-1)
    centred = parts - mean[..., None]
    return mean, centred @ centred.transpose(1, 2) / parts.shape[-1]


def test_whitening_batch_norm_gives_identity_covariance_in_training():
    x = correlated_input()
    _, cov_in = channel_stats(x)
    corr = cov_in[:, 0, 1] / (cov_in[:, 0, 0] * cov_in[:, 1, 1]).sqrt()
    assert corr.min() > 0.9  # the input really is correlated, and far from unit variance
    assert cov_in[:, 0, 0].max() > 5 and cov_in[:, 0, 0].min() < 0.1
    bn = ComplexBatchNorm2d(3, whitening=True, affine=False).train()
    mean, cov = channel_stats(bn(x))
    torch.testing.assert_close(mean, torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(cov, torch.eye(2).expand(3, 2, 2), atol=1e-3, rtol=0)
    # With the learned scale at its init, diag(1/sqrt2): covariance gamma gamma^T = I / 2.
    mean, cov = channel_stats(ComplexBatchNorm2d(3, whitening=True).train()(x))
    torch.testing.assert_close(cov, 0.5 * torch.eye(2).expand(3, 2, 2), atol=1e-3, rtol=0)


def test_naive_batch_norm_normalises_parts_but_keeps_their_correlation():
    x = correlated_input()
    _, cov = channel_stats(ComplexBatchNorm2d(3, whitening=False).train()(x))
    torch.testing.assert_close(cov.diagonal(dim1=1, dim2=2), torch.ones(3, 2), atol=1e-3, rtol=0)
    assert cov[:, 0, 1].min() > 0.85  # corr(u, 0.9u + 0.4v) = 0.914 survives


@pytest.mark.parametrize("whitening", [True, False])
def test_batch_norm_eval_uses_running_statistics(whitening):
    x = correlated_input()
    bn = ComplexBatchNorm2d(3, whitening=whitening, momentum=1.0)  # running stats := last batch's
    with torch.no_grad():
        bn.train()
        train_out = bn(x)
        bn.eval()
        eval_out = bn(x)
        single = bn(x[:1])
        bn.train()
        single_train = bn(x[:1])
    # Running covariance is unbiased (n / (n - 1), n = 1920): the same normalisation to ~1e-3.
    torch.testing.assert_close(eval_out, train_out, atol=2e-3, rtol=2e-3)
    # Eval normalises an item with the stored statistics, not its own.
    torch.testing.assert_close(single, eval_out[:1], atol=1e-6, rtol=1e-6)
    assert (single_train - train_out[:1]).abs().max() > 0.05


def test_whitening_running_statistics_track_the_data():
    x = correlated_input()
    bn = ComplexBatchNorm2d(3, whitening=True, momentum=1.0).train()
    with torch.no_grad():
        bn(x)
    mean, cov = channel_stats(x)
    n = x.numel() // x.shape[1]
    torch.testing.assert_close(bn.running_mean, mean.T, atol=1e-5, rtol=1e-5)
    expected = torch.stack([cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1]]) * n / (n - 1)
    torch.testing.assert_close(bn.running_cov, expected, atol=1e-4, rtol=1e-4)
    assert int(bn.num_batches_tracked) == 1


def test_split_activations():
    x = torch.tensor([[-2.0, 3.0, 4.0, -5.0]]).view(1, 4, 1, 1)  # re [-2, 3], im [4, -5]
    assert ComplexLeakyReLU(0.2)(x).flatten().tolist() == pytest.approx([-0.4, 3.0, 4.0, -1.0])
    prelu = ComplexPReLU(2, init=0.5)
    assert sum(p.numel() for p in prelu.parameters()) == 4  # one slope per real and imaginary channel
    assert prelu(x).flatten().tolist() == pytest.approx([-1.0, 3.0, 4.0, -2.5])


def test_depthwise_separable_conv_is_depthwise_then_pointwise():
    torch.manual_seed(3)
    conv = ComplexDepthwiseSeparableConv2d(4, 6, kernel_size=3, padding=3, dilation=3)
    assert conv.depthwise.groups == 4
    # depthwise 4 complex 3x3 filters + pointwise 4 -> 6 + complex bias, real and imaginary parts
    assert sum(p.numel() for p in conv.parameters()) == 2 * (4 * 9 + 4 * 6 + 6)
    randomise_bias(conv.pointwise)
    x = torch.randn(2, 8, 10, 9)
    z = F.conv2d(to_complex(x), layer_weight(conv.depthwise), padding=3, dilation=3, groups=4)
    z = F.conv2d(z, layer_weight(conv.pointwise), layer_bias(conv.pointwise))
    torch.testing.assert_close(conv(x), to_real(z), atol=1e-5, rtol=1e-5)


def test_residual_block_is_pre_activation_with_shortcut():
    torch.manual_seed(4)
    block = ComplexResidualBlock(3, 5).train()
    assert isinstance(block.shortcut, ComplexConv2d) and block.shortcut.kernel_size == (1, 1)
    assert isinstance(ComplexResidualBlock(5, 5).shortcut, torch.nn.Identity)
    x = torch.randn(2, 6, 9, 8)
    h = block.conv1(F.leaky_relu(block.norm1(x), 0.2))
    h = block.conv2(F.leaky_relu(block.norm2(h), 0.2))
    torch.testing.assert_close(block(x), h + block.shortcut(x))
    out = block(x)
    assert out.shape == (2, 10, 9, 8)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize("whitening", [False, True])
def test_aspp_shape_and_global_context(whitening):
    torch.manual_seed(5)
    aspp = ComplexASPP(4, 6, rates=(3, 9), whitening=whitening).eval()
    # Dilation 9 on a map smaller than the dilated kernel still keeps the size.
    assert aspp(torch.randn(1, 8, 5, 3)).shape == (1, 12, 5, 3)
    assert aspp.project[0].in_channels == 4 + 4 * 3  # input + two atrous + pooled branch
    x = torch.randn(1, 8, 40, 40, requires_grad=True)
    aspp(x)[0, :, 0, 0].sum().backward()
    # The global-pool branch makes a corner depend on the far corner (beyond any atrous kernel).
    assert x.grad[0, :, 39, 39].abs().sum() > 0
    # Along a row, the rate-9 atrous branch sees offsets 9 and 18 more than 8 or 10 (pooled share only).
    row = x.grad[0].abs().sum(0)[0]
    assert row[9] > 2 * row[8] and row[9] > 2 * row[10]
