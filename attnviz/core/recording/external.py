"""Recorder adapters for attention modules of torchvision and timm networks (SE, ECA, Global Context).

Registered on first use of a model built with those libraries (:func:`register_external_adapters`), so the
bundled zoo never imports timm.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from attnviz.core.recording.adapters import Adapter, ChannelGateAdapter, register_adapter
from attnviz.results import AttentionMap


class GlobalContextAdapter(Adapter):
    """timm's GlobalContext: the attention logits (softmax over positions is applied here) + channel gate."""

    attention = "gc"

    def __init__(self, module_type: type) -> None:
        self.module_types = (module_type,)

    def gates(self, module: nn.Module) -> dict[str, nn.Module]:
        found = {"channel": module.gate} if getattr(module, "mlp_scale", None) is not None else {}
        if module.conv_attn is not None:
            found["logits"] = module.conv_attn
        return found

    def maps(self, block: str, stage: str, rec) -> list[AttentionMap]:
        out = []
        if "logits" in rec:
            logits = rec["logits"][0].astype(np.float64)
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            out.append(AttentionMap(block, stage, "gc", "context", "spatial", (weights / weights.max()).astype(np.float32),
                                    ("H", "W"), "softmax over positions of conv_attn, scaled to max 1"))
        if "channel" in rec:
            out.append(AttentionMap(block, stage, "gc", "channel", "channel", rec["channel"].reshape(-1), ("C",),
                                    "sigmoid channel weights of the context transform"))
        return out


_registered = False


def register_external_adapters() -> None:
    """Teach the recorder torchvision's SqueezeExcitation and timm's SE / ECA / GC modules (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    from torchvision.ops.misc import SqueezeExcitation

    register_adapter(ChannelGateAdapter("se", SqueezeExcitation, lambda m: m.scale_activation))
    try:
        from timm.layers.eca import EcaModule
        from timm.layers.global_context import GlobalContext
        from timm.layers.squeeze_excite import SEModule
        from timm.models.senet import SEModule as LegacySEModule
    except ImportError:  # timm is optional for the bundled zoo
        return
    register_adapter(ChannelGateAdapter("se", SEModule, lambda m: m.gate))
    register_adapter(ChannelGateAdapter("se", LegacySEModule, lambda m: m.sigmoid))
    register_adapter(ChannelGateAdapter("eca", EcaModule, lambda m: m.gate))
    register_adapter(GlobalContextAdapter(GlobalContext))
