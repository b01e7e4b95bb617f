"""Record what every attention module computes, through forward hooks on its gate submodules.

``with record_attention(model) as rec: model(x)`` attaches one hook per gate (sigmoid/softmax module)
of every recognised attention module, and removes them all on exit — also when the forward raises.
``rec.maps()`` turns the raw gate outputs into named, displayable :class:`AttentionMap` objects and
``rec.stage_summaries()`` averages them per stage. Each attention type contributes one adapter; adding
a type means adding an adapter class to ``ADAPTERS``.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from models.attention import (BAM, CBAM, ContextBlock, CoordAtt, DualAttention, ECALayer, MHSA2d, NonLocalBlock2D,
                              RecurrentCrissCross, SELayer, SpatialTransformer, TripletAttention)

from .results import AttentionMap

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
        from .transformers import is_attention, is_windowed

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


def _adapter_for(module: nn.Module) -> Adapter | None:
    for adapter in ADAPTERS:
        if adapter.accepts(module):
            return adapter
    return None


_STAGE_RE = re.compile(r"(?:^|\.)(layer\d+)(?:\.|$)")


_AFTER_STAGE_RE = re.compile(r"^[a-z_]+?(\d+)$")


_BLOCK_RE = re.compile(r"^(blocks\.\d+)(?:\.|$)")


def _stage_of(block: str, rec: Records, maps: list[AttentionMap]) -> str:
    transformer_block = _BLOCK_RE.match(block)  # timm ViT: every block is its own stage ("blocks.5")
    if transformer_block:
        return transformer_block.group(1)
    match = _STAGE_RE.search(block)
    if match:
        return match.group(1)
    after = _AFTER_STAGE_RE.match(block)  # modules placed after a stage: bam1, nl2, cc3, danet3
    if after:
        return f"layer{after.group(1)}"
    spatial = next((m for m in maps if m.layout == "spatial"), None)
    if spatial is not None:
        return f"{spatial.data.shape[0]}x{spatial.data.shape[1]}"
    return ""


class AttentionRecording:
    """Hooks on every gate of every recognised attention module of one model, for a whole batch.

    Gate outputs are kept for every sample of the forward (on the CPU, float32); :meth:`maps` turns one
    sample's records into maps, so a batch of N images yields the same maps as N single-image passes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules: list[tuple[str, nn.Module, Adapter]] = [
            (name, m, a) for name, m in model.named_modules() if (a := _adapter_for(m)) is not None]
        self._records: dict[str, dict[str, np.ndarray]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._undo: list[Callable[[], None]] = []
        self._input_hw: tuple[int, int] | None = None

    def attach(self) -> None:
        if any(a.needs_tokens for _, _, a in self.modules):
            self._handles.append(self.model.register_forward_pre_hook(self._input_probe))
        for name, module, adapter in self.modules:
            self._records[name] = {}
            undo = adapter.prepare(module)
            if undo is not None:
                self._undo.append(undo)
            self._handles.append(module.register_forward_pre_hook(self._shape_probe(name, adapter.needs_tokens)))
            for gate_name, gate in adapter.gates(module).items():
                self._handles.append(gate.register_forward_hook(self._hook(name, gate_name)))

    def _input_probe(self, module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4:
            self._input_hw = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))

    def _shape_probe(self, block: str, tokens: bool):
        store = self._records[block]

        def probe(module: nn.Module, inputs: tuple) -> None:
            if inputs and isinstance(inputs[0], torch.Tensor):
                store[SHAPE] = np.asarray(inputs[0].shape[1:])
                if tokens and inputs[0].dim() == 3 and self._input_hw is not None:
                    from .cam import token_grid

                    prefix, (h, w) = token_grid(self.model, int(inputs[0].shape[1]), self._input_hw)
                    store[TOKENS] = np.asarray([prefix, h, w])
        return probe

    def _hook(self, block: str, gate_name: str):
        store = self._records[block]

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            store[gate_name] = output.detach().to(torch.float32).cpu().numpy().copy()
        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._undo:
            self._undo.pop()()

    def clear(self) -> None:
        for rec in self._records.values():
            rec.clear()

    def sample_records(self, name: str, index: int) -> Records:
        """One sample's records of one block, shaped as the adapters expect (no batch axis)."""
        rec = self._records.get(name) or {}
        out: Records = {}
        for key, value in rec.items():
            if key == SHAPE:
                out[key] = tuple(int(v) for v in value)
            elif key == TOKENS:
                out[key] = value
            else:
                out[key] = value[index]
        return out

    def maps(self, index: int = 0) -> list[AttentionMap]:
        """The maps of sample ``index`` of the recorded batch."""
        out: list[AttentionMap] = []
        for name, _module, adapter in self.modules:
            rec = self.sample_records(name, index)
            if not any(k not in (SHAPE, TOKENS) for k in rec):
                continue
            block_maps = adapter.maps(name, "", rec)
            stage = _stage_of(name, rec, block_maps)
            out.extend(AttentionMap(m.block, m.stage or stage, m.attention, m.name, m.layout, m.data, m.axes, m.note)
                       for m in block_maps)
        return out


# The one map per block that the stage summary averages: its effective spatial weight.
SUMMARY_SPATIAL = {"cbam": "spatial", "triplet": "mean", "coord": "ca_product", "bam": "attention",
                   "gc": "context", "nonlocal": "attended (mean over queries)", "cc": "attended (mean over queries)",
                   "danet": "attended (mean over queries)", "mhsa": "attended (mean over queries)",
                   "vit": "class-token attention"}


def stage_summaries(maps: list[AttentionMap]) -> list[AttentionMap]:
    """Per stage: mean effective spatial map over its blocks, and mean channel weights (where shapes agree)."""
    by_stage: dict[tuple[str, str], list[AttentionMap]] = {}
    for m in maps:
        by_stage.setdefault((m.stage, m.attention), []).append(m)
    out = []
    for (stage, kind), group in by_stage.items():
        spatial = [m.data for m in group if m.layout == "spatial" and m.name == SUMMARY_SPATIAL.get(kind)]
        shapes = {s.shape for s in spatial}
        if spatial and len(shapes) == 1:
            out.append(AttentionMap(stage, stage, kind, "spatial (stage mean)", "spatial",
                                    np.mean(np.stack(spatial), axis=0).astype(np.float32), ("H", "W"),
                                    f"mean of {len(spatial)} block maps"))
        channel = [m.data for m in group if m.layout == "channel"]
        if channel and len({c.shape for c in channel}) == 1:
            out.append(AttentionMap(stage, stage, kind, "channel (stage mean)", "channel",
                                    np.mean(np.stack(channel), axis=0).astype(np.float32), ("C",),
                                    f"mean of {len(channel)} blocks' channel weights"))
    return out


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecording]:
    """Attach gate hooks for the duration of the block; they are removed even if the block raises."""
    recording = AttentionRecording(model)
    try:
        recording.attach()
        yield recording
    finally:
        recording.detach()
