"""How each attention type's gates are found and what its recorded outputs mean: one :class:`Adapter` per type.

A type of ``models.attention.ATTENTION_TYPES`` whose gates are ``nn.Sigmoid`` submodules needs no adapter: the
fallback :class:`SigmoidGateAdapter` records every sigmoid and reads its output by shape (channel weights or a
spatial map). Write an adapter only for other layouts (softmax affinities, affine grids, tokens).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from torch import nn

from attnviz.results import AttentionMap
from models.attention import (
    ATTENTION_TYPES,
    BAM,
    CBAM,
    ContextBlock,
    CoordAtt,
    DualAttention,
    ECALayer,
    MHSA2d,
    NonLocalBlock2D,
    RecurrentCrissCross,
    SELayer,
    SpatialTransformer,
    TripletAttention,
)

Records = dict[str, np.ndarray]  # gate name -> one sample's gate output (float32); SHAPE -> module input shape


SHAPE = "__input_shape__"


TOKENS = "__tokens__"            # transformer blocks: (prefix tokens, grid h, grid w) of the recorded input


def _spatial(block: str, stage: str, kind: str, name: str, data: np.ndarray, note: str) -> AttentionMap:
    return AttentionMap(block, stage, kind, name, "spatial", np.asarray(data, np.float32), ("H", "W"), note)


class Adapter:
    """How to find the gates of one attention type and what its recorded maps mean."""

    attention = ""
    module_types: tuple[type, ...] = ()
    needs_tokens = False   # the recording adds TOKENS (prefix count and patch grid) to this type's records

    def accepts(self, module: nn.Module) -> bool:
        return bool(self.module_types) and isinstance(module, self.module_types)

    def prepare(self, module: nn.Module) -> Callable[[], None] | None:
        """Make the gates observable for one recording (e.g. switch fused attention off); return the undo."""
        return None

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        raise NotImplementedError

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        raise NotImplementedError


class ChannelGateAdapter(Adapter):
    """SE / ECA: one sigmoid over channels."""

    def __init__(self, attention: str, module_type: type, gate: Callable[[nn.Module], nn.Module]) -> None:
        self.attention, self.module_types, self._gate = attention, (module_type,), gate

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"channel": self._gate(module)}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        weights = rec["channel"].reshape(-1)
        return [AttentionMap(block, stage, self.attention, "channel", "channel", weights, ("C",),
                             "sigmoid channel weights (one per channel)")]


class CBAMAdapter(Adapter):
    attention, module_types = "cbam", (CBAM,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        found = {"channel": module.ChannelGate.gate}
        if not module.no_spatial:
            found["spatial"] = module.SpatialGate.gate
        return found

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        out = [AttentionMap(block, stage, "cbam", "channel", "channel", rec["channel"].reshape(-1), ("C",),
                            "channel gate: sigmoid(MLP(avg) + MLP(max))")]
        if "spatial" in rec:
            out.append(_spatial(block, stage, "cbam", "spatial", rec["spatial"][0],
                                "spatial gate: sigmoid(BN(conv7x7([max, mean])))"))
        return out


class TripletAdapter(Adapter):
    """Three rotated branches; each is also projected onto the H x W plane so they can be compared."""

    attention, module_types = "triplet", (TripletAttention,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        found = {"cw": module.ChannelGateH.gate, "hc": module.ChannelGateW.gate}
        if not module.no_spatial:
            found["hw"] = module.SpatialGate.gate
        return found

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        cw = rec["cw"][0]            # (C, W): branch rotated so H is pooled
        hc = rec["hc"][0]            # (H, C): branch rotated so W is pooled
        h, w = hc.shape[0], cw.shape[1]
        # Each branch multiplies x[c, h, w] by a weight; averaging that weight over channels gives its H x W effect.
        cw_hw = np.broadcast_to(cw.mean(axis=0)[None, :], (h, w))
        hc_hw = np.broadcast_to(hc.mean(axis=1)[:, None], (h, w))
        branches = [cw_hw, hc_hw]
        out = [
            AttentionMap(block, stage, "triplet", "branch C-W", "matrix", cw, ("C", "W"),
                         "ChannelGateH (pools over H): weight per (channel, column)"),
            AttentionMap(block, stage, "triplet", "branch H-C", "matrix", hc, ("H", "C"),
                         "ChannelGateW (pools over W): weight per (row, channel)"),
            _spatial(block, stage, "triplet", "branch C-W on HxW", cw_hw, "ChannelGateH weight averaged over channels"),
            _spatial(block, stage, "triplet", "branch H-C on HxW", hc_hw, "ChannelGateW weight averaged over channels"),
        ]
        if "hw" in rec:
            hw = rec["hw"][0]
            branches.append(hw)
            out.append(_spatial(block, stage, "triplet", "branch H-W", hw, "SpatialGate (pools over C)"))
        mean = np.mean(np.stack(branches), axis=0)
        out.append(_spatial(block, stage, "triplet", "mean", mean,
                            "mean of the branches' weights, averaged over channels (the module's effective spatial weight)"))
        return out


class CoordAdapter(Adapter):
    attention, module_types = "coord", (CoordAtt,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"a_h": module.gate_h, "a_w": module.gate_w}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        a_h = rec["a_h"][:, :, 0]      # (C, H)
        a_w = rec["a_w"][:, 0, :]      # (C, W)
        product = np.einsum("ch,cw->hw", a_h, a_w) / a_h.shape[0]  # channel mean of a_h * a_w
        return [
            AttentionMap(block, stage, "coord", "h_profile", "profile_h", a_h.mean(axis=0), ("H",),
                         "a_h averaged over channels"),
            AttentionMap(block, stage, "coord", "w_profile", "profile_w", a_w.mean(axis=0), ("W",),
                         "a_w averaged over channels"),
            AttentionMap(block, stage, "coord", "a_h", "matrix", a_h, ("C", "H"), "height gate per channel"),
            AttentionMap(block, stage, "coord", "a_w", "matrix", a_w, ("C", "W"), "width gate per channel"),
            _spatial(block, stage, "coord", "ca_product", product, "a_h x a_w, averaged over channels"),
        ]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-v))).astype(np.float32)


def _grid(n: int, h: int, w: int) -> tuple[int, int]:
    """Key-grid shape for ``n`` key positions of an h x w map (same size, or 2x2 sub-sampled)."""
    if n == h * w:
        return h, w
    if n == (h // 2) * (w // 2):
        return h // 2, w // 2
    raise ValueError(f"cannot place {n} keys on a {h}x{w} map")


def _affinity(block: str, stage: str, kind: str, name: str, weights: np.ndarray, shape: tuple[int, ...],
              note: str) -> AttentionMap:
    """(HW, HW') query-by-key weights -> an (H, W, H', W') affinity map."""
    h, w = shape[-2:]
    hk, wk = _grid(weights.shape[-1], h, w)
    return AttentionMap(block, stage, kind, name, "affinity", weights.reshape(h, w, hk, wk).astype(np.float32),
                        ("Hq", "Wq", "Hk", "Wk"), note)


def _attended(block: str, stage: str, kind: str, affinity: AttentionMap, note: str) -> AttentionMap:
    """How much attention each key position receives, averaged over queries (a spatial summary)."""
    received = affinity.data.mean(axis=(0, 1))
    top = received.max()
    return _spatial(block, stage, kind, "attended (mean over queries)", received / top if top > 0 else received, note)


class BAMAdapter(Adapter):
    attention, module_types = "bam", (BAM,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"mc": module.channel_att, "ms": module.spatial_att, "gate": module.gate}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        return [
            AttentionMap(block, stage, "bam", "channel", "channel", _sigmoid(rec["mc"].reshape(-1)), ("C",),
                         "sigmoid of the channel branch Mc"),
            _spatial(block, stage, "bam", "spatial", _sigmoid(rec["ms"][0]), "sigmoid of the spatial branch Ms"),
            _spatial(block, stage, "bam", "attention", rec["gate"].mean(axis=0),
                     "the combined gate sigmoid(Mc + Ms), averaged over channels (x is scaled by 1 + this)"),
        ]


class NonLocalAdapter(Adapter):
    attention, module_types = "nonlocal", (NonLocalBlock2D,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"affinity": module.softmax}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        aff = _affinity(block, stage, "nonlocal", "affinity", rec["affinity"], rec[SHAPE],
                        "softmax(theta^T phi): each query position's weights over the (sub-sampled) positions")
        return [aff, _attended(block, stage, "nonlocal", aff, "attention received per position, scaled to max 1")]


class ContextAdapter(Adapter):
    attention, module_types = "gc", (ContextBlock,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"context": module.softmax}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        h, w = rec[SHAPE][-2:]
        ctx = rec["context"].reshape(h, w)
        return [_spatial(block, stage, "gc", "context", ctx / ctx.max() if ctx.max() > 0 else ctx,
                         "softmax(conv_mask(x)) over positions (one map for all queries), scaled to max 1")]


def _cross_to_full(step: np.ndarray) -> np.ndarray:
    """(H, W, H + W) criss-cross weights -> (H, W, H, W): each query's weights on its column and row."""
    h, w = step.shape[:2]
    full = np.zeros((h, w, h, w), np.float32)
    rows, cols = np.arange(h), np.arange(w)
    for y in range(h):
        for x in range(w):
            full[y, x, :, x] += step[y, x, :h]   # the column through (y, x)
            full[y, x, y, :] += step[y, x, h:]   # the row through (y, x)
    del rows, cols
    return full


class CrissCrossAdapter(Adapter):
    attention, module_types = "cc", (RecurrentCrissCross,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {f"step{i + 1}": g for i, g in enumerate(module.steps)}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        steps = [rec[k] for k in sorted(k for k in rec if k.startswith("step"))]
        h, w = steps[0].shape[:2]
        out = []
        reach = None
        for i, step in enumerate(steps, start=1):
            full = _cross_to_full(step)
            out.append(AttentionMap(block, stage, "cc", f"step {i} criss-cross", "affinity", full,
                                    ("Hq", "Wq", "Hk", "Wk"), "a query's weights over its own row and column"))
            flat = full.reshape(h * w, h * w)
            reach = flat if reach is None else flat @ reach    # step i reads step i-1's outputs
        reach_map = AttentionMap(block, stage, "cc", f"{len(steps)}-step reach", "affinity",
                                 reach.reshape(h, w, h, w).astype(np.float32), ("Hq", "Wq", "Hk", "Wk"),
                                 "product of the steps' weights: where a query can read from after all steps")
        out.append(reach_map)
        out.append(_attended(block, stage, "cc", reach_map, "multi-step reach received per position, scaled to max 1"))
        return out


class DANetAdapter(Adapter):
    attention, module_types = "danet", (DualAttention,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"pam": module.pam.softmax, "cam": module.cam.softmax}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        pam = _affinity(block, stage, "danet", "position attention", rec["pam"], rec[SHAPE],
                        "PAM softmax: each query position's weights over all positions")
        return [pam, _attended(block, stage, "danet", pam, "position attention received, scaled to max 1"),
                AttentionMap(block, stage, "danet", "channel affinity", "matrix", rec["cam"], ("C", "C"),
                             "CAM softmax(rowmax - X X^T): each channel's weights over all channels")]


class MHSAAdapter(Adapter):
    attention, module_types = "mhsa", (MHSA2d,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"attention": module.softmax}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        heads = rec["attention"]                              # (heads, HW, HW)
        out = [_affinity(block, stage, "mhsa", f"head {i + 1}", heads[i], rec[SHAPE],
                         f"head {i + 1}: each query position's weights over all positions") for i in range(len(heads))]
        mean = _affinity(block, stage, "mhsa", "mean of heads", heads.mean(axis=0), rec[SHAPE],
                         "attention weights averaged over heads")
        return out + [mean, _attended(block, stage, "mhsa", mean, "attention received (all heads), scaled to max 1")]


class STNAdapter(Adapter):
    attention, module_types = "stn", (SpatialTransformer,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"theta": module.theta}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        return [AttentionMap(block, "input", "stn", "sampled region", "affine", rec["theta"].astype(np.float32),
                             ("row", "col"), "the square of the input the classifier sees (theta of affine_grid)")]


class TransformerAdapter(Adapter):
    """timm ViT / DeiT self-attention (and look-alikes): every head's softmax weights over the tokens.

    The weights are read at ``attn_drop`` (identity in eval mode), which only sees them on timm's explicit
    attention path: :meth:`prepare` switches fused attention off for the recording and the undo restores it.
    """

    attention = "vit"
    needs_tokens = True

    def accepts(self, module: nn.Module) -> bool:
        from attnviz.core.transformers import is_attention, is_windowed

        return is_attention(module) and not is_windowed(module)

    def prepare(self, module: nn.Module) -> Callable[[], None]:
        saved = module.fused_attn
        module.fused_attn = False

        def undo() -> None:
            module.fused_attn = saved
        return undo

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {"attention": module.attn_drop}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        heads = rec["attention"]                              # (heads, N, N)
        prefix, h, w = (int(v) for v in rec[TOKENS])
        patches = heads[:, prefix:, prefix:]

        def affinity(name: str, weights: np.ndarray, note: str) -> AttentionMap:
            return AttentionMap(block, stage, "vit", name, "affinity", weights.reshape(h, w, h, w).astype(np.float32),
                                ("Hq", "Wq", "Hk", "Wk"), note)

        out = [affinity(f"head {i + 1}", patches[i], f"head {i + 1}: each patch's softmax weights over the patches "
                        f"(the {prefix} class/register token column{'s' if prefix != 1 else ''} left out)")
               for i in range(len(heads))]
        out.append(affinity("mean of heads", patches.mean(axis=0), "attention weights averaged over heads"))
        if prefix >= 1:
            cls = heads[:, 0, prefix:].mean(axis=0).reshape(h, w)
            top = cls.max()
            out.append(_spatial(block, stage, "vit", "class-token attention", cls / top if top > 0 else cls,
                                "the class token's weights over the patches, mean of heads, scaled to max 1"))
        return out


ADAPTERS: list[Adapter] = [
    ChannelGateAdapter("se", SELayer, lambda m: m.gate),
    ChannelGateAdapter("eca", ECALayer, lambda m: m.gate),
    CBAMAdapter(),
    TripletAdapter(),
    CoordAdapter(),
    BAMAdapter(),
    NonLocalAdapter(),
    ContextAdapter(),
    CrissCrossAdapter(),
    DANetAdapter(),
    MHSAAdapter(),
    STNAdapter(),
    TransformerAdapter(),
]


def register_adapter(adapter: Adapter) -> None:
    """Let another package (timm/torchvision sources) teach the recorder a new gate layout."""
    ADAPTERS.append(adapter)


class SigmoidGateAdapter(Adapter):
    """Any registered attention type without its own adapter: every ``nn.Sigmoid`` inside it is a gate.

    An output of shape (C, 1, 1) reads as channel weights, (1, H, W) or (H, W) as a spatial map; others are
    kept as a channel-mean spatial map.
    """

    def __init__(self, attention: str, module_type: type) -> None:
        self.attention, self.module_types = attention, (module_type,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        return {name or "gate": m for name, m in module.named_modules() if isinstance(m, nn.Sigmoid)}

    def maps(self, block: str, stage: str, rec: Records) -> list[AttentionMap]:
        out = []
        for name, data in rec.items():
            if name.startswith("__"):
                continue
            a = np.asarray(data, np.float32)
            if a.ndim == 3 and a.shape[1:] == (1, 1):
                out.append(AttentionMap(block, stage, self.attention, name, "channel", a.reshape(-1), ("C",),
                                        "sigmoid channel weights (one per channel)"))
            elif a.ndim >= 2:
                spatial = a if a.ndim == 2 else a.mean(axis=0)
                out.append(_spatial(block, stage, self.attention, name, spatial, "sigmoid gate (channel mean)"))
        return out


def _adapter_for(module: nn.Module) -> Adapter | None:
    for adapter in ADAPTERS:
        if adapter.accepts(module):
            return adapter
    for key, entry in ATTENTION_TYPES.items():  # a registered type without an adapter of its own
        if isinstance(entry.factory, type) and isinstance(module, entry.factory):
            return SigmoidGateAdapter(key, entry.factory)
    return None
