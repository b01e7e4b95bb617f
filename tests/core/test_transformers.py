"""Vision transformers through the same engine: token grids found without a user reshape, attention recorded
through hooks with fused attention switched off only during the call, rollout and grad-rollout checked against
independent loop computations."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import count_hooks
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from attnviz import explain, explain_batch
from attnviz.core.cam import token_grid
from attnviz.errors import TargetError


def _timm(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw).eval()


def _vit_reshape(prefix: int, side: int):
    """The reshape a user writes for pytorch-grad-cam (its documented ViT example, with the prefix count)."""
    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:, :].reshape(t.size(0), side, side, t.size(2)).permute(0, 3, 1, 2)
    return reshape


CASES = [  # (timm name, documented target layer, hand-written reshape)
    ("vit_tiny_patch16_224", lambda m: m.blocks[-1].norm1, _vit_reshape(1, 14)),
    ("deit_tiny_distilled_patch16_224", lambda m: m.blocks[-1].norm1, _vit_reshape(2, 14)),
    ("swin_tiny_patch4_window7_224", lambda m: m.layers[-1].blocks[-1].norm1, lambda t: t.permute(0, 3, 1, 2)),
]


@pytest.mark.parametrize("name,layer,reshape", CASES, ids=[c[0] for c in CASES])
def test_gradcam_without_layer_or_reshape_equals_the_library(name, layer, reshape):
    model = _timm(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    targets = [3, 700]
    ours = explain_batch(model, x, ("gradcam", "layercam"), targets, record=False)
    with GradCAM(model=model, target_layers=[layer(model)], reshape_transform=reshape) as lib:
        ref = lib(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    for i, e in enumerate(ours):
        assert e.cams["gradcam"].heatmap.shape == (224, 224)
        assert float(np.abs(e.cams["gradcam"].heatmap - ref[i]).max()) <= 1e-5
    assert count_hooks(model) == 0


def test_token_grids_with_class_distillation_and_register_tokens():
    assert token_grid(_timm("vit_tiny_patch16_224"), 197, (224, 224)) == (1, (14, 14))
    assert token_grid(_timm("deit_tiny_distilled_patch16_224"), 198, (224, 224)) == (2, (14, 14))
    reg = _timm("vit_tiny_patch16_224", reg_tokens=4, img_size=(96, 128), num_classes=3)
    assert reg.num_prefix_tokens == 5
    assert token_grid(reg, 5 + 6 * 8, (96, 128)) == (5, (6, 8))
    plain = torch.nn.Identity()  # no timm attributes: inferred from the token count and the input's aspect
    assert token_grid(plain, 1 + 12 * 16, (192, 256)) == (1, (12, 16))
    x = torch.randn(1, 3, 96, 128)
    e = explain(reg, x, ("gradcam", "rollout", "grad-rollout"))
    assert all(c.heatmap.shape == (96, 128) for c in e.cams.values())
    assert e.cams["rollout"].layer_map.shape == (6, 8)


def _tiny_vit() -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(3)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=3, num_heads=2, num_classes=5).eval()


def _manual_forward(model, x: torch.Tensor):
    """The tiny ViT's forward written out by hand, keeping every block's softmax weights in the graph."""
    tokens = model.patch_embed(x)
    tokens = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + model.pos_embed
    weights = []
    for blk in model.blocks:
        h = blk.norm1(tokens)
        b, n, c = h.shape
        heads = blk.attn.num_heads
        qkv = blk.attn.qkv(h).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax((q * blk.attn.scale) @ k.transpose(-2, -1), dim=-1)
        a.retain_grad()
        weights.append(a)
        out = (a @ v).transpose(1, 2).reshape(b, n, c)
        tokens = tokens + blk.ls1(blk.attn.proj(out))
        tokens = tokens + blk.ls2(blk.mlp(blk.norm2(tokens)))
    logits = model.head(model.norm(tokens)[:, 0])
    return logits, weights


def _loop_rollout(weights: list[np.ndarray]) -> np.ndarray:
    n = weights[0].shape[-1]
    joint = np.eye(n)
    for w in weights:
        a = w.mean(axis=0)
        step = np.zeros((n, n))
        for i in range(n):
            row = [0.5 * a[i, j] + (0.5 if i == j else 0.0) for j in range(n)]
            total = sum(row)
            for j in range(n):
                step[i, j] = row[j] / total
        new = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                new[i, j] = sum(step[i, k] * joint[k, j] for k in range(n))
        joint = new
    return joint[0, 1:].reshape(4, 4)


def _loop_grad_rollout(weights: list[np.ndarray], grads: list[np.ndarray]) -> np.ndarray:
    n = weights[0].shape[-1]
    relevance = np.eye(n)
    for w, g in zip(weights, grads):
        heads = w.shape[0]
        cam = np.zeros((n, n))
        for h in range(heads):
            for i in range(n):
                for j in range(n):
                    cam[i, j] += max(0.0, g[h, i, j] * w[h, i, j]) / heads
        add = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                add[i, j] = sum(cam[i, k] * relevance[k, j] for k in range(n))
        relevance = relevance + add
    return relevance[0, 1:].reshape(4, 4)


def test_rollout_and_grad_rollout_equal_independent_loop_computations():
    model = _tiny_vit()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    logits, weights = _manual_forward(model, x)
    target = 2
    logits[0, target].backward()
    w = [a.detach()[0].double().numpy() for a in weights]
    g = [a.grad[0].double().numpy() for a in weights]
    e = explain(model, x, ("rollout", "grad-rollout"), target=target)
    np.testing.assert_allclose(logits.detach()[0].numpy(), e.logits, atol=1e-5)
    np.testing.assert_allclose(e.cams["rollout"].layer_map, _loop_rollout(w), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e.cams["grad-rollout"].layer_map, _loop_grad_rollout(w, g), rtol=1e-4, atol=1e-6)
    for method in ("rollout", "grad-rollout"):
        heat = e.cams[method].heatmap
        assert heat.shape == (32, 32) and heat.min() >= 0 and abs(float(heat.max()) - 1) < 1e-6


class _Boom(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_fused_attention_is_switched_off_only_during_the_call_and_restored():
    model = _tiny_vit()
    for blk in model.blocks:
        blk.attn.fused_attn = True
    model.blocks[1].attn.fused_attn = False  # each module's own setting comes back, not a global one
    before = [blk.attn.fused_attn for blk in model.blocks]
    seen = []
    hook = model.blocks[0].attn.register_forward_pre_hook(lambda m, i: seen.append(m.fused_attn))
    e = explain(model, torch.randn(1, 3, 32, 32), ("gradcam", "rollout", "grad-rollout"))
    hook.remove()
    assert seen == [False]
    assert [blk.attn.fused_attn for blk in model.blocks] == before
    # per block: two heads, the mean of heads, and the class token's map
    names = [(a.block, a.name) for a in e.attention_maps]
    assert names[:4] == [("blocks.0.attn", "head 1"), ("blocks.0.attn", "head 2"), ("blocks.0.attn", "mean of heads"),
                         ("blocks.0.attn", "class-token attention")]
    assert len(e.attention_maps) == 3 * 4 and e.attention == "vit"
    assert e.attention_maps[0].data.shape == (4, 4, 4, 4)
    model.head = _Boom()
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, torch.randn(1, 3, 32, 32), ("rollout",))
    assert [blk.attn.fused_attn for blk in model.blocks] == before
    assert count_hooks(model) == 0


def test_rollout_needs_global_attention_with_a_class_token():
    swin = _timm("swin_tiny_patch4_window7_224")
    with pytest.raises(TargetError, match="global self-attention"):
        explain(swin, torch.randn(1, 3, 224, 224), ("rollout",))
    gap = _timm("vit_tiny_patch16_224", class_token=False, global_pool="avg", img_size=64, num_classes=4)
    with pytest.raises(TargetError, match="class token"):
        explain(gap, torch.randn(1, 3, 64, 64), ("rollout",))
