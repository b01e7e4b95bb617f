"""BAM, Non-local, Global Context, Criss-Cross, DANet, MHSA and the spatial transformer:
each module's maths against an independent re-computation on small tensors, and BAM's official keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from attnviz.core.cam import affine_to_pixels, warp_to_input
from models.attention import (
    BAM,
    ContextBlock,
    DualAttention,
    MHSA2d,
    NonLocalBlock2D,
    RecurrentCrissCross,
    SpatialTransformer,
)

torch.manual_seed(0)


def _randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random weights, BN statistics and gammas (so zero-initialised parts do not hide the maths)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if t.dtype.is_floating_point:
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.4)
    return module.eval()


def _bn(x: torch.Tensor, bn) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) \
        * bn.weight.view(shape) + bn.bias.view(shape)


def _conv(x, conv, **kw):
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, **kw)


# ---- BAM ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("combine", ["sum", "product"])
def test_bam_channel_and_spatial_branches(combine):
    m = _randomise(BAM(32, reduction=4, combine=combine))
    x = torch.randn(2, 32, 9, 9)
    c = m.channel_att.gate_c
    v = F.linear(x.mean(dim=(2, 3)), c.gate_c_fc_0.weight, c.gate_c_fc_0.bias)
    v = torch.relu(_bn(v, c.gate_c_bn_1))
    mc = F.linear(v, c.gate_c_fc_final.weight, c.gate_c_fc_final.bias)[:, :, None, None]
    s = m.spatial_att.gate_s
    y = torch.relu(_bn(_conv(x, s.gate_s_conv_reduce0), s.gate_s_bn_reduce0))
    for i in range(2):
        conv = getattr(s, f"gate_s_conv_di_{i}")
        assert conv.dilation == (4, 4) and conv.kernel_size == (3, 3)
        y = torch.relu(_bn(_conv(y, conv), getattr(s, f"gate_s_bn_di_{i}")))
    ms = _conv(y, s.gate_s_conv_final)
    att = torch.sigmoid(mc + ms if combine == "sum" else mc * ms)
    torch.testing.assert_close(m(x), x * (1 + att))


# Official Jongchan/attention-module BAM ResNet-50: BAM(64*4), BAM(128*4), BAM(256*4) as bam1..3, r = 16
def _official_bam_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for i, c in ((1, 256), (2, 512), (3, 1024)):
        r = c // 16
        p = f"bam{i}.channel_att.gate_c."
        keys.update({p + "gate_c_fc_0.weight": (r, c), p + "gate_c_fc_0.bias": (r,),
                     p + "gate_c_fc_final.weight": (c, r), p + "gate_c_fc_final.bias": (c,)})
        for k in ("weight", "bias", "running_mean", "running_var"):
            keys[p + f"gate_c_bn_1.{k}"] = (r,)
        keys[p + "gate_c_bn_1.num_batches_tracked"] = ()
        p = f"bam{i}.spatial_att.gate_s."
        keys.update({p + "gate_s_conv_reduce0.weight": (r, c, 1, 1), p + "gate_s_conv_reduce0.bias": (r,),
                     p + "gate_s_conv_final.weight": (1, r, 1, 1), p + "gate_s_conv_final.bias": (1,)})
        for bn in ("gate_s_bn_reduce0", "gate_s_bn_di_0", "gate_s_bn_di_1"):
            for k in ("weight", "bias", "running_mean", "running_var"):
                keys[p + f"{bn}.{k}"] = (r,)
            keys[p + f"{bn}.num_batches_tracked"] = ()
        for d in (0, 1):
            keys[p + f"gate_s_conv_di_{d}.weight"] = (r, r, 3, 3)
            keys[p + f"gate_s_conv_di_{d}.bias"] = (r,)
    return keys


def test_bam_resnet50_loads_an_official_layout_state_dict_strictly():
    plain = {k: tuple(v.shape) for k, v in models.build("resnet50").state_dict().items()}
    official = {**plain, **_official_bam_keys()}
    g = torch.Generator().manual_seed(0)
    state = {"state_dict": {"module." + k: (torch.randn(s, generator=g) if s else torch.tensor(7))
                            for k, s in official.items()}}
    model = models.build("bam_resnet50")
    model.load_state_dict(models.unwrap_state_dict(state), strict=True)
    assert torch.equal(model.bam2.spatial_att.gate_s.gate_s_conv_di_1.weight,
                       state["state_dict"]["module.bam2.spatial_att.gate_s.gate_s_conv_di_1.weight"])


def test_bam_sits_between_stages():
    model = models.build("bam_resnet50", num_classes=10).eval()
    seen = {}
    handles = [getattr(model, f"layer{i}").register_forward_hook(lambda m, i_, o, k=i: seen.__setitem__(f"l{k}", o))
               for i in (1, 2, 3, 4)]
    handles += [getattr(model, f"bam{i}").register_forward_hook(
        lambda m, i_, o, k=i: seen.__setitem__(f"b{k}in", i_[0])) for i in (1, 2, 3)]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    for i in (1, 2, 3):
        assert torch.equal(seen[f"b{i}in"], seen[f"l{i}"])
    assert not hasattr(model, "bam4")


# ---- Non-local -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sub_sample", [True, False])
def test_non_local_embedded_gaussian(sub_sample):
    m = _randomise(NonLocalBlock2D(8, sub_sample=sub_sample))
    x = torch.randn(2, 8, 6, 4)
    conv = lambda mod: mod[0] if isinstance(mod, torch.nn.Sequential) else mod  # noqa: E731
    theta = _conv(x, m.theta).flatten(2)                      # (N, 4, HW)
    phi = _conv(x, conv(m.phi))
    g = _conv(x, conv(m.g))
    if sub_sample:
        phi, g = F.max_pool2d(phi, 2), F.max_pool2d(g, 2)
    phi, g = phi.flatten(2), g.flatten(2)
    weights = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)          # (N, HW, HW')
    y = (g @ weights.transpose(1, 2)).view(2, 4, 6, 4)
    expected = _bn(_conv(y, m.W[0]), m.W[1]) + x
    torch.testing.assert_close(m(x), expected)
    assert weights.shape[-1] == (3 * 2 if sub_sample else 6 * 4)  # keys on the 2x2 max-pooled grid


def test_non_local_starts_as_identity():
    m = NonLocalBlock2D(8).eval()
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(m(x), x)


# ---- Global context ------------------------------------------------------------------------------

def test_global_context_block():
    m = _randomise(ContextBlock(32))
    x = torch.randn(2, 32, 5, 6)
    weights = torch.softmax(_conv(x, m.conv_mask).flatten(2), dim=-1)     # (N, 1, HW)
    context = (x.flatten(2) * weights).sum(-1)[:, :, None, None]          # (N, C, 1, 1)
    t = m.channel_add_conv
    y = _conv(context, t[0])
    y = F.layer_norm(y, y.shape[1:], t[1].weight, t[1].bias, t[1].eps)
    y = _conv(torch.relu(y), t[3])
    torch.testing.assert_close(m(x), x + y)
    fresh = ContextBlock(32).eval()
    torch.testing.assert_close(fresh(x), x)  # last conv zero-initialised


# ---- Criss-cross ---------------------------------------------------------------------------------

def _criss_cross_step(x, cca):
    """Loop over queries: softmax over its column (self excluded) then its row (self included)."""
    n, c, h, w = x.shape
    q, k, v = _conv(x, cca.query_conv), _conv(x, cca.key_conv), _conv(x, cca.value_conv)
    out = torch.zeros_like(v)
    weights = torch.zeros(n, h, w, h + w)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                e_col = torch.stack([(q[b, :, i, j] * k[b, :, r, j]).sum() if r != i else torch.tensor(float("-inf"))
                                     for r in range(h)])
                e_row = torch.stack([(q[b, :, i, j] * k[b, :, i, s]).sum() for s in range(w)])
                a = torch.softmax(torch.cat([e_col, e_row]), dim=0)
                weights[b, i, j] = a
                out[b, :, i, j] = (a[:h, None] * v[b, :, :, j].T).sum(0) + (a[h:, None] * v[b, :, i, :].T).sum(0)
    return cca.gamma * out + x, weights


def test_criss_cross_attention_matches_a_per_query_loop_and_recurs_with_shared_weights():
    m = _randomise(RecurrentCrissCross(16, recurrence=2))
    x = torch.randn(1, 16, 3, 4)
    step1, w1 = _criss_cross_step(x, m.cca)
    step2, w2 = _criss_cross_step(step1, m.cca)
    got = {}
    hooks = [s.register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k, o)) for k, s in enumerate(m.steps)]
    torch.testing.assert_close(m(x), step2)
    for h in hooks:
        h.remove()
    assert got[0].shape == (1, 3, 4, 3 + 4)
    torch.testing.assert_close(got[0], w1)
    torch.testing.assert_close(got[1], w2)
    assert len(list(m.parameters())) == 7  # one set of weights shared by both steps


def test_criss_cross_head_wraps_the_shared_steps_like_ccnet_rcca():
    m = _randomise(RecurrentCrissCross(16, recurrence=2, head=True))
    x = torch.randn(2, 16, 3, 4)
    y = m.conva(x)
    step1, _ = _criss_cross_step(y, m.cca)
    step2, _ = _criss_cross_step(step1, m.cca)
    expected = m.bottleneck(torch.cat([x, m.convb(step2)], dim=1))
    torch.testing.assert_close(m(x), expected)
    assert m.cca.value_conv.in_channels == 4 and m(x).shape == x.shape
    assert isinstance(models.build("small_resnet_cc", num_classes=11).cc3.conva, torch.nn.Sequential)  # zoo default


def test_two_criss_cross_steps_reach_every_position():
    from attnviz.core.recording.adapters import _cross_to_full

    step = torch.softmax(torch.randn(3, 4, 7), dim=-1).numpy()
    full = [_cross_to_full(step).reshape(12, 12) for _ in range(2)]
    assert (full[0] > 0).sum(1).tolist() == [3 + 4 - 1] * 12  # one step: the row and column only
    assert ((full[1] @ full[0]) > 0).all()                    # two steps: everything


# ---- DANet ---------------------------------------------------------------------------------------

def test_danet_position_and_channel_attention():
    m = _randomise(DualAttention(16))
    x = torch.randn(2, 16, 3, 5)
    pam = m.pam
    q = _conv(x, pam.query_conv).flatten(2)
    k = _conv(x, pam.key_conv).flatten(2)
    v = _conv(x, pam.value_conv).flatten(2)
    a = torch.softmax(q.transpose(1, 2) @ k, dim=-1)                     # (N, HW, HW): queries x keys
    pam_out = pam.gamma * (v @ a.transpose(1, 2)).view_as(x) + x
    flat = x.flatten(2)
    energy = flat @ flat.transpose(1, 2)
    ca = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    cam_out = m.cam.gamma * (ca @ flat).view_as(x) + x
    torch.testing.assert_close(m(x), (pam_out + cam_out) / 2)
    fresh = DualAttention(16).eval()
    torch.testing.assert_close(fresh(x), x)  # both gammas start at zero


# ---- MHSA ----------------------------------------------------------------------------------------

def test_mhsa_heads_with_content_and_position_logits():
    m = _randomise(MHSA2d(8, height=3, width=4, heads=2))
    x = torch.randn(2, 8, 3, 4)
    q, k, v = (_conv(x, c).view(2, 2, 4, 12) for c in (m.query, m.key, m.value))
    pos = (m.rel_h + m.rel_w).reshape(2, 4, 12)
    out = torch.zeros(2, 2, 4, 12)
    for b in range(2):
        for h in range(2):
            logits = (q[b, h].T @ (k[b, h] + pos[h])) / 2.0   # 1/sqrt(d), d = 4
            out[b, h] = v[b, h] @ torch.softmax(logits, dim=-1).T
    torch.testing.assert_close(m(x), out.reshape(2, 8, 3, 4))


def test_mhsa_replaces_the_last_stage_3x3_convs():
    model = models.build("small_resnet_mhsa", num_classes=11)
    assert all(isinstance(b.conv2, MHSA2d) for b in model.layer3)
    assert not any(isinstance(b.conv2, MHSA2d) for b in model.layer2)
    bot = models.build("bot_resnet50")
    assert isinstance(bot.layer4[0].conv2[0], MHSA2d) and isinstance(bot.layer4[0].conv2[1], torch.nn.AvgPool2d)
    assert sum(p.numel() for p in bot.parameters()) < 21_000_000  # BoTNet-50 is ~20.8M parameters


# ---- Spatial transformer -------------------------------------------------------------------------

def test_stn_theta_is_a_zoom_and_shift_that_stays_inside():
    m = _randomise(SpatialTransformer(3, min_scale=0.3))
    x = torch.randn(4, 3, 32, 32)
    theta = m.affine(x)
    s = theta[:, 0, 0]
    assert torch.allclose(theta[:, 1, 1], s) and torch.all(theta[:, 0, 1] == 0) and torch.all(theta[:, 1, 0] == 0)
    assert torch.all((s >= 0.3) & (s <= 1.0))
    assert torch.all(theta[:, :, 2].abs() <= (1 - s).unsqueeze(1) + 1e-6)
    grid = F.affine_grid(theta, [4, 3, 32, 32], align_corners=False)
    torch.testing.assert_close(m(x), F.grid_sample(x, grid, padding_mode="border", align_corners=False))


def test_stn_starts_near_the_identity():
    m = SpatialTransformer(3).eval()
    theta = m.affine(torch.randn(1, 3, 32, 32))
    assert theta[0, 0, 0] > 0.97 and theta[0, :, 2].abs().max() < 1e-6


def test_warp_to_input_inverts_grid_sample_geometry():
    h = w = 32
    image = torch.zeros(1, 1, h, w)
    image[0, 0, 10, 20] = 1.0
    theta = torch.tensor([[[0.5, 0.0, 0.2], [0.0, 0.5, -0.3]]])
    out = F.grid_sample(image, F.affine_grid(theta, [1, 1, h, w], align_corners=False), align_corners=False)
    yo, xo = np.unravel_index(int(out[0, 0].argmax()), (h, w))
    np.testing.assert_allclose(affine_to_pixels(theta[0].numpy(), h, w) @ [xo, yo, 1.0], [20, 10], atol=0.6)
    heat = np.zeros((h, w), np.float32)
    heat[yo, xo] = 1.0
    back = warp_to_input(heat, theta[0].numpy())
    assert np.unravel_index(int(back.argmax()), back.shape) == (10, 20)
