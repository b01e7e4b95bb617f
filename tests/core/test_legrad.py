"""LeGrad (issue 28) equals TorchCAM 0.5's ``torchcam.methods.LeGrad`` on the same transformer, batch and targets:
a timm ViT-S/16 at 224 px with random weights, and the bundled zoo's ``vit`` with its trained weights.

How the reference is pinned:

* TorchCAM's LeGrad only hooks torchvision's ``VisionTransformer`` (blocks with ``self_attention`` as an
  ``nn.MultiheadAttention``); timm's blocks hold their own ``Attention``. The reference is therefore a torchvision
  ``VisionTransformer`` of the same size carrying the timm model's weights, copied tensor for tensor
  (``benchmarks.reference_nets.as_torchvision_vit``); its logits are checked against the timm model's first.
* TorchCAM's default per-block score is the head on the *mean of all tokens*; timm's ViT (and the LeGrad paper)
  score the class token. The reference is given ``score_projection`` = torchvision's final norm and head on the
  class token, which is what attnviz's per-block score (timm's ``norm`` + ``forward_head``) computes.
* Every block is a target layer (attnviz uses all of them), one prefix token.
* Normalisation: TorchCAM min-max scales the patch-grid map with eps 1e-8 and does not resize. attnviz's
  ``layer_map`` (the unnormalised grid map) is compared with TorchCAM's ``normalized=False`` map after that same
  scaling; the heatmap with pytorch-grad-cam's post-processing of TorchCAM's map (``scale_cam_image`` to the
  input size, then once more as its layer aggregation does), as attnviz post-processes every map.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from conftest import count_hooks
from pytorch_grad_cam.utils.image import scale_cam_image
from torchcam.methods import LeGrad

from attnviz import explain, explain_batch
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes
from attnviz.errors import TargetError
from attnviz.zoo import registry as zoo
from benchmarks.reference_nets import as_torchvision_vit

TARGETS = [3, 7]


def _torchcam_legrad(vit: torch.nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """TorchCAM's unnormalised LeGrad map (B, h, w) on the torchvision copy of ``vit``."""
    tv = as_torchvision_vit(vit)
    with torch.no_grad():
        assert float((tv(x) - vit(x)).abs().max()) < 1e-4  # the copy is the same network
    with LeGrad(tv, list(tv.encoder.layers), score_projection=lambda t: tv.heads(tv.encoder.ln(t[:, 0]))) as cam:
        tv(x)
        (maps,) = cam(class_idx=targets, normalized=False)
    return maps.detach().numpy()


def _assert_equal(explanations, reference: np.ndarray) -> None:
    layer = np.stack([e.cams["legrad"].layer_map for e in explanations])
    heat = np.stack([e.cams["legrad"].heatmap for e in explanations])
    assert layer.shape == reference.shape and reference.max() > 0

    def torchcam_scaled(m: np.ndarray) -> np.ndarray:
        m = m - m.min(axis=(1, 2), keepdims=True)
        return m / (m.max(axis=(1, 2), keepdims=True) + 1e-8)

    assert float(np.abs(torchcam_scaled(layer) - torchcam_scaled(reference)).max()) <= 1e-5
    side = heat.shape[-2:][::-1]
    expected = scale_cam_image(scale_cam_image(reference, side))
    assert 0 <= heat.min() and heat.max() <= 1 + 1e-6
    assert float(np.abs(heat - expected).max()) <= 1e-5


def test_legrad_equals_torchcam_on_a_timm_vit_small():
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=1000).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours = explain_batch(vit, x, ("legrad", "grad-rollout"), targets=TARGETS)
    _assert_equal(ours, _torchcam_legrad(vit, x, TARGETS))
    assert not np.allclose(ours[0].cams["legrad"].heatmap, ours[0].cams["grad-rollout"].heatmap, atol=0.05)
    assert count_hooks(vit) == 0 and all(blk.attn.fused_attn == vit.blocks[0].attn.fused_attn for blk in vit.blocks)


def test_legrad_equals_torchcam_on_the_bundled_vit():
    vit = zoo.load("vit", "cpu")
    scenes = cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE)
    ours = explain_batch(vit, list(scenes.images), ("legrad",), targets=TARGETS)
    x = vit.spec.normalise(np.stack([e.image for e in ours]))
    _assert_equal(ours, _torchcam_legrad(vit.model, x, TARGETS))


def test_legrad_refuses_windowed_attention_and_cnns():
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with pytest.raises(TargetError, match="global self-attention"):
        explain(swin, torch.randn(1, 3, 224, 224), ("legrad",))
    cnn = torchvision.models.resnet18(num_classes=4).eval()
    with pytest.raises(TargetError, match="global self-attention"):
        explain(cnn, torch.randn(1, 3, 64, 64), ("legrad",), layer="layer4")


def test_legrad_needs_no_class_token_and_drops_every_prefix_token():
    """A global-pool ViT has no class token (rollout refuses it); LeGrad scores each block by the model's own
    patch-mean head, and its map covers the patches."""
    torch.manual_seed(0)
    gap = timm.create_model("vit_tiny_patch16_224", class_token=False, global_pool="avg", img_size=64,
                            num_classes=4).eval()
    e = explain(gap, torch.randn(1, 3, 64, 64), ("legrad",), target=1)
    assert e.cams["legrad"].layer_map.shape == (4, 4) and e.cams["legrad"].heatmap.max() == pytest.approx(1, abs=1e-6)
    # DeiT-distilled: two prefix tokens dropped, each block scored by the mean of its two heads (timm's forward_head)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=64, num_classes=5).eval()
    e = explain(deit, torch.randn(1, 3, 64, 64), ("legrad",), target=1, contrast=2)
    assert e.cams["legrad"].layer_map.shape == (4, 4) and e.cams["legrad"].heatmap.max() == pytest.approx(1, abs=1e-6)
