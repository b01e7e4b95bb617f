"""Forward semantics of each attention module, checked against independent re-computations.

Each expected value below is computed with plain tensor ops straight from the papers' official code
(pool order, BN settings, where the sigmoid is, how branches combine) — not by calling the module.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import count_hooks

from models.attention import (
    ATTENTION_TYPES,
    CBAM,
    CORE_TYPES,
    CoordAtt,
    ECALayer,
    SELayer,
    TripletAttention,
    adaptive_kernel_size,
)

torch.manual_seed(0)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights *and* random BN statistics, so eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(1)
    for name, t in module.state_dict().items():
        if t.dtype.is_floating_point:
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return module.eval()


def _bn_eval(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) \
        * bn.weight.view(shape) + bn.bias.view(shape)


def _zpool_conv_bn_sigmoid(x: torch.Tensor, branch) -> torch.Tensor:
    """Z-pool (max first, then mean over dim 1) -> conv (no bias, 'same' pad) -> eval BN -> sigmoid."""
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    k = branch.spatial.conv.weight.shape[-1]
    conv = F.conv2d(pooled, branch.spatial.conv.weight, padding=k // 2)
    return torch.sigmoid(_bn_eval(conv, branch.spatial.bn))


def test_se_matches_squeeze_excite_formula():
    m = _randomise(SELayer(32, reduction=16))
    x = torch.randn(2, 32, 5, 7)
    w1, w2 = m.fc[0].weight, m.fc[2].weight
    squeezed = x.mean(dim=(2, 3))
    expected = x * torch.sigmoid(torch.relu(squeezed @ w1.T) @ w2.T)[:, :, None, None]
    assert w1.shape == (2, 32) and m.fc[0].bias is None and m.fc[2].bias is None
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_eca_is_a_1d_conv_across_channels(k):
    m = _randomise(ECALayer(16, k_size=k))
    x = torch.randn(2, 16, 4, 3)
    w = m.conv.weight.view(-1)
    pooled = x.mean(dim=(2, 3))
    padded = F.pad(pooled, (k // 2, k // 2))
    mixed = torch.stack([(padded[:, c:c + k] * w).sum(dim=1) for c in range(16)], dim=1)
    torch.testing.assert_close(m(x), x * torch.sigmoid(mixed)[:, :, None, None])
    assert m.conv.bias is None


def test_eca_adaptive_kernel_rule():
    # k = |(log2 C + b) / gamma|, forced odd (gamma=2, b=1)
    for c in (16, 64, 256, 512, 1024, 2048):
        t = int(abs((math.log2(c) + 1) / 2))
        assert adaptive_kernel_size(c) == (t if t % 2 else t + 1)
    assert ECALayer(2048, k_size=None).conv.kernel_size == (7,)


def test_cbam_channel_then_spatial_with_summed_mlp_and_max_first_pool():
    m = _randomise(CBAM(32, reduction=16))
    x = torch.randn(2, 32, 6, 5)
    mlp = m.ChannelGate.mlp
    assert mlp[1].bias is not None and mlp[3].bias is not None  # the official MLP has biases

    def shared_mlp(v):
        return F.linear(torch.relu(F.linear(v, mlp[1].weight, mlp[1].bias)), mlp[3].weight, mlp[3].bias)

    channel = torch.sigmoid(shared_mlp(x.mean(dim=(2, 3))) + shared_mlp(x.amax(dim=(2, 3))))
    after_channel = x * channel[:, :, None, None]
    expected = after_channel * _zpool_conv_bn_sigmoid(after_channel, m.SpatialGate)
    torch.testing.assert_close(m(x), expected)


def test_cbam_and_triplet_bn_settings_and_no_relu():
    for bn in (CBAM(32).SpatialGate.spatial.bn, TripletAttention(8).ChannelGateH.spatial.bn):
        assert (bn.eps, bn.momentum, bn.affine) == (1e-5, 0.01, True)
    assert CBAM(32).SpatialGate.spatial.relu is None
    assert TripletAttention(8).SpatialGate.spatial.relu is None
    conv = CBAM(32).SpatialGate.spatial.conv
    assert (conv.kernel_size, conv.padding, conv.bias) == ((7, 7), (3, 3), None)


def test_bn_momentum_is_point_zero_one_in_training():
    m = TripletAttention(8)
    m.train()
    bn = m.SpatialGate.spatial.bn
    x = torch.randn(4, 8, 6, 6)
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    batch_mean = F.conv2d(pooled, m.SpatialGate.spatial.conv.weight, padding=3).mean()
    m(x)
    torch.testing.assert_close(bn.running_mean, 0.01 * batch_mean.view(1))


def test_pool_order_is_max_then_mean():
    m = CBAM(4).SpatialGate.eval()
    with torch.no_grad():
        m.spatial.conv.weight.zero_()
        m.spatial.conv.weight[0, 0, 3, 3] = 1.0  # centre tap reads input map 0 only
    x = torch.zeros(1, 4, 3, 3)
    x[0, 0] = 4.0  # max over channels = 4, mean = 1
    out = m.spatial(m.compress(x))
    bn = m.spatial.bn
    torch.testing.assert_close(out, (4.0 - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * torch.ones_like(out))


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("k", [7, 3])
def test_triplet_rotations_and_averaging(no_spatial, k):
    m = _randomise(TripletAttention(6, kernel_size=k, no_spatial=no_spatial))
    x = torch.randn(2, 6, 5, 4)
    # branch 1: rotate so H is the pooled axis -> (N, H, C, W)
    xh = x.permute(0, 2, 1, 3)
    out_h = (xh * _zpool_conv_bn_sigmoid(xh, m.ChannelGateH)).permute(0, 2, 1, 3)
    # branch 2: rotate so W is the pooled axis -> (N, W, H, C)
    xw = x.permute(0, 3, 2, 1)
    out_w = (xw * _zpool_conv_bn_sigmoid(xw, m.ChannelGateW)).permute(0, 3, 2, 1)
    if no_spatial:
        expected = (out_h + out_w) / 2
        assert not hasattr(m, "SpatialGate")
    else:
        expected = (out_h + out_w + x * _zpool_conv_bn_sigmoid(x, m.SpatialGate)) / 3
    torch.testing.assert_close(m(x), expected)


def test_coordinate_attention_formula():
    m = _randomise(CoordAtt(64))
    x = torch.randn(2, 64, 5, 7)
    assert m.conv1.out_channels == max(8, 64 // 32) == 8
    assert m.conv1.bias is not None and m.conv2.bias is not None and m.conv3.bias is not None
    pool_h = x.mean(dim=3)                       # (N, C, H): average over W
    pool_w = x.mean(dim=2)                       # (N, C, W): average over H
    y = torch.cat([pool_h, pool_w], dim=2).unsqueeze(-1)
    y = _bn_eval(F.conv2d(y, m.conv1.weight, m.conv1.bias), m.bn1)
    y = y * torch.clamp(y + 3, 0, 6) / 6         # h-swish
    y_h, y_w = y[:, :, :5], y[:, :, 5:]
    a_h = torch.sigmoid(F.conv2d(y_h, m.conv2.weight, m.conv2.bias))                      # (N, C, H, 1)
    a_w = torch.sigmoid(F.conv2d(y_w, m.conv3.weight, m.conv3.bias)).permute(0, 1, 3, 2)  # (N, C, 1, W)
    torch.testing.assert_close(m(x), x * a_h * a_w)
    assert CoordAtt(1024).conv1.out_channels == 32


def _gates(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Sigmoid)}


EXPECTED_GATE_SHAPES = {
    # (N, C, H, W) = (2, 32, 6, 5)
    "se": {"fc.3": (2, 32)},
    "eca": {"sigmoid": (2, 32, 1, 1)},
    "cbam": {"ChannelGate.gate": (2, 32, 1, 1), "SpatialGate.gate": (2, 1, 6, 5)},
    "triplet": {"ChannelGateH.gate": (2, 1, 32, 5), "ChannelGateW.gate": (2, 1, 6, 32),
                "SpatialGate.gate": (2, 1, 6, 5)},
    "coord": {"gate_h": (2, 32, 6, 1), "gate_w": (2, 32, 1, 5)},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_GATE_SHAPES))
def test_every_gate_is_hookable_with_documented_shape_and_hooks_are_removable(kind):
    module = ATTENTION_TYPES[kind].build(32).eval()
    seen: dict[str, tuple[int, ...]] = {}
    handles = [g.register_forward_hook(lambda mod, inp, out, n=name: seen.__setitem__(n, tuple(out.shape)))
               for name, g in _gates(module).items()]
    module(torch.randn(2, 32, 6, 5))
    for h in handles:
        h.remove()
    assert seen == EXPECTED_GATE_SHAPES[kind]
    assert count_hooks(module) == 0


def test_every_core_type_has_a_gate_expectation():
    # the seed-family types (softmax / affine gates) are covered in test_seed_family.py and test_recorder.py
    assert set(EXPECTED_GATE_SHAPES) == set(CORE_TYPES) and set(CORE_TYPES) <= set(ATTENTION_TYPES)
