"""Vision transformers: their attention weights, and the maps built from them (rollout, grad-rollout, LeGrad).

timm computes attention with PyTorch's fused ``scaled_dot_product_attention``, which never materialises the
softmax weights. :func:`unfused` switches every attention module to timm's explicit path for the duration of a
``with`` block and restores each module's own setting afterwards; in the explicit path the weights pass through
the module's ``attn_drop`` (an identity in eval mode), where a forward hook can read them.

* ``rollout`` — Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers": per block, the head-mean
  attention plus the residual identity, 0.5 A + 0.5 I, rows renormalised; multiplied from the first block to the
  last; the class token's row over the patch tokens.
* ``grad-rollout`` — Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal
  and Encoder-Decoder Transformers": R = I, then per block R += mean_heads((dS/dA * A)^+) @ R; the class token's
  row over the patch tokens. S is the explained score (the target logit, or the contrast).
* ``legrad`` — Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via Feature
  Formation Sensitivity": every block l gets its own score S_l, the model's head applied to that block's tokens
  (timm: ``forward_head(norm(tokens))``); the map is the mean over blocks of dS_l/dA_l (A_l the block's softmax
  weights), ReLU'd and averaged over heads and queries, over the patch keys. No class token needed.

Nothing here imports timm: modules are recognised by the attributes timm's ``Attention`` and Swin's
``WindowAttention`` have, so plain PyTorch look-alikes work too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from attnviz.errors import TargetError


def is_attention(module: nn.Module) -> bool:
    """A timm-style self-attention module: qkv projection, ``attn_drop`` after the softmax, a fused switch."""
    return hasattr(module, "qkv") and isinstance(getattr(module, "attn_drop", None), nn.Module) \
        and hasattr(module, "fused_attn") and hasattr(module, "num_heads")


def is_windowed(module: nn.Module) -> bool:
    """Swin-style attention inside local windows (no class token, no global token mixing)."""
    return hasattr(module, "window_size") or hasattr(module, "window_area")


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every transformer attention module of ``model`` in forward order, with its dotted name."""
    return [(name, m) for name, m in model.named_modules() if is_attention(m)]


ROLLOUT_NEEDS = "rollout and grad-rollout need global self-attention with a class token (ViT, DeiT)"


def rollout_obstacle(model: nn.Module) -> str:
    """What ``model`` has instead of the global self-attention rollout chains ("" when it has it): a CNN's
    "no transformer attention", a Swin's "windowed (Swin-style) attention"."""
    found = attention_modules(model)
    if any(is_windowed(m) for _, m in found):
        return "windowed (Swin-style) attention"
    return "" if found else "no transformer attention"


def global_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules rollout can chain: global (not windowed) self-attention over all tokens."""
    obstacle = rollout_obstacle(model)
    if obstacle:
        raise TargetError(f"{ROLLOUT_NEEDS}; this model has {obstacle}. Use a CAM method instead.")
    return attention_modules(model)


def attention_blocks(model: nn.Module, attentions: list[nn.Module]) -> list[nn.Module]:
    """The block that holds each attention module (timm: ``blocks[i]`` with ``.attn``), whose output tokens give
    LeGrad's per-block score."""
    owner = {id(m.attn): m for m in model.modules() if isinstance(getattr(m, "attn", None), nn.Module)}
    missing = [a for a in attentions if id(a) not in owner]
    if missing:
        raise TargetError("LeGrad needs transformer blocks that hold their attention as `.attn` (timm ViT/DeiT).")
    return [owner[id(a)] for a in attentions]


def block_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's head on one block's output tokens (B, N, C) -> (B, classes): timm's final norm, then its
    ``forward_head`` (the class token or the patch mean, as the model pools)."""
    norm, head = getattr(model, "norm", None), getattr(model, "forward_head", None)
    if not isinstance(norm, nn.Module) or not callable(head):
        raise TargetError("LeGrad needs a timm VisionTransformer's `norm` and `forward_head` to score each block.")
    return head(norm(tokens))


def probabilities_module(attention: nn.Module) -> nn.Module:
    """The submodule whose output is the softmax attention weights in timm's explicit path."""
    return attention.attn_drop


@contextmanager
def unfused(model: nn.Module) -> Iterator[None]:
    """Switch fused attention off in every attention module of ``model``; restore each module's setting."""
    saved = [(m, m.fused_attn) for _, m in attention_modules(model)]
    try:
        for module, _ in saved:
            module.fused_attn = False
        yield
    finally:
        for module, value in saved:
            module.fused_attn = value


def _class_row(joint: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, N) joint attention or relevance -> the class token's row over the patch tokens, (B, h, w)."""
    if prefix < 1:
        raise TargetError("rollout explains the class token, and this model has none (global-pool ViT); "
                          "use a CAM method instead.")
    return joint[:, 0, prefix:].reshape(joint.shape[0], *grid)


def rollout(attentions: list[torch.Tensor], gradients: list[torch.Tensor] | None, prefix: int,
            grid: tuple[int, int]) -> torch.Tensor:
    """Attention rollout from per-block weights, each (B, heads, N, N) (``gradients`` unused). (B, h, w), float32."""
    joint = None
    for attn in attentions:
        a = attn.float().mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return _class_row(joint, prefix, grid)


def grad_rollout(attentions: list[torch.Tensor], gradients: list[torch.Tensor], prefix: int,
                 grid: tuple[int, int]) -> torch.Tensor:
    """Gradient-weighted relevance (Chefer et al. 2021) from per-block weights and their gradients. (B, h, w)."""
    relevance = None
    for attn, grad in zip(attentions, gradients):
        cam = (grad.float() * attn.float()).clamp(min=0).mean(dim=1)
        if relevance is None:
            relevance = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device).expand_as(cam).clone()
        relevance = relevance + cam @ relevance
    return _class_row(relevance, prefix, grid)


def legrad(attentions: list[torch.Tensor], gradients: list[torch.Tensor], prefix: int,
           grid: tuple[int, int]) -> torch.Tensor:
    """LeGrad from per-block weights and the gradient of each block's own score with respect to them:
    mean over blocks of ReLU(dS_l/dA_l) averaged over heads and queries, patch keys only. (B, h, w), float32."""
    maps = [grad.float().clamp(min=0).mean(dim=(1, 2))[:, prefix:] for grad in gradients]
    return torch.stack(maps).mean(dim=0).reshape(maps[0].shape[0], *grid)
