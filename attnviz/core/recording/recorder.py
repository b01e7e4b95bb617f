"""Record what every attention module computes, through forward hooks on its gate submodules.

``with record_attention(model) as rec: model(x)`` attaches one hook per gate (sigmoid/softmax module)
of every recognised attention module, and removes them all on exit — also when the forward raises.
``rec.maps()`` turns the raw gate outputs into named, displayable :class:`AttentionMap` objects and
``rec.stage_summaries()`` averages them per stage. How each type's gates read is :mod:`.adapters`' job.
"""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from attnviz.core.devices import to_host
from attnviz.core.recording.adapters import SHAPE, TOKENS, Adapter, Records, _adapter_for
from attnviz.core.recording.external import register_external_adapters
from attnviz.results import AttentionMap

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

    Gate outputs are kept for every sample of the forward (float32, on the model's device during the forward;
    the first :meth:`maps` call copies all of them to the host at once, :func:`attnviz.core.devices.to_host`);
    :meth:`maps` turns one sample's records into maps, so a batch of N images yields the same maps as N
    single-image passes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules: list[tuple[str, nn.Module, Adapter]] = [
            (name, m, a) for name, m in model.named_modules() if (a := _adapter_for(m)) is not None]
        self._records: dict[str, dict[str, np.ndarray | torch.Tensor]] = {}
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
                    from attnviz.core.cam import token_grid

                    prefix, (h, w) = token_grid(self.model, int(inputs[0].shape[1]), self._input_hw)
                    store[TOKENS] = np.asarray([prefix, h, w])
        return probe

    def _hook(self, block: str, gate_name: str):
        store = self._records[block]

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            store[gate_name] = output.detach().to(torch.float32, copy=True)  # later in-place ops must not reach it
        return hook

    def _fetch(self) -> None:
        """Every gate output still on the device -> numpy, in one device->host copy."""
        keys = [(name, key) for name, rec in self._records.items() for key, v in rec.items()
                if isinstance(v, torch.Tensor)]
        if not keys:
            return
        arrays = to_host([self._records[name][key] for name, key in keys])  # type: ignore[misc]
        for (name, key), array in zip(keys, arrays):
            self._records[name][key] = array

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
        self._fetch()
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
                                    f"mean of {len(spatial)} block maps" if len(spatial) > 1
                                    else "one block's map"))
        channel = [m.data for m in group if m.layout == "channel"]
        if channel and len({c.shape for c in channel}) == 1:
            out.append(AttentionMap(stage, stage, kind, "channel (stage mean)", "channel",
                                    np.mean(np.stack(channel), axis=0).astype(np.float32), ("C",),
                                    f"mean of {len(channel)} blocks' channel weights"))
    return out


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecording]:
    """Attach gate hooks for the duration of the block; they are removed even if the block raises."""
    if "timm" in sys.modules or "torchvision" in sys.modules:  # a model built with them may carry their modules
        register_external_adapters()
    recording = AttentionRecording(model)
    try:
        recording.attach()
        yield recording
    finally:
        recording.detach()
