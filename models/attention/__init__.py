"""Attention modules, one per file, and the registry that tells backbones how to build them.

Adding an attention type: write ``models/attention/<name>.py`` (an ``nn.Module`` whose gates are
named submodules), then add one :class:`AttentionType` entry to ``ATTENTION_TYPES`` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .cbam import CBAM
from .coord import CoordAtt
from .eca import ECALayer, adaptive_kernel_size
from .se import SELayer
from .triplet import TripletAttention


@dataclass(frozen=True)
class AttentionType:
    """How to build one attention type and where it sits in a residual block."""

    key: str                                  # short name used in model names and model cards
    display: str                              # human name for the page and reports
    block_attr: str                           # attribute name inside a residual block (official names)
    factory: Callable[..., nn.Module]         # (channels, **kwargs) -> module
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, channels: int, **kwargs: Any) -> nn.Module:
        return self.factory(channels, **{**self.defaults, **kwargs})


ATTENTION_TYPES: dict[str, AttentionType] = {
    t.key: t
    for t in (
        AttentionType("se", "SE", "se", SELayer, "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"),
        AttentionType("eca", "ECA", "eca", ECALayer, "Wang et al., ECA-Net, CVPR 2020"),
        AttentionType("cbam", "CBAM", "cbam", CBAM, "Woo et al., CBAM, ECCV 2018"),
        AttentionType("triplet", "Triplet Attention", "triplet_attention", TripletAttention,
                      "Misra et al., Rotate to Attend: Convolutional Triplet Attention Module, WACV 2021"),
        AttentionType("coord", "Coordinate Attention", "ca", CoordAtt,
                      "Hou et al., Coordinate Attention for Efficient Mobile Network Design, CVPR 2021"),
    )
}


def attention_type(key: str) -> AttentionType:
    """Look up an attention type by key, with the list of valid keys in the error."""
    try:
        return ATTENTION_TYPES[key]
    except KeyError:
        raise KeyError(f"unknown attention type {key!r}; choose one of {sorted(ATTENTION_TYPES)}") from None


__all__ = [
    "ATTENTION_TYPES", "AttentionType", "attention_type",
    "CBAM", "CoordAtt", "ECALayer", "SELayer", "TripletAttention", "adaptive_kernel_size",
]
