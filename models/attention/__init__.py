"""Attention modules, one per file, and the registry that tells backbones how to build them.

Adding an attention type: write ``models/attention/<name>.py`` (an ``nn.Module`` whose gates are
named submodules), then add one :class:`AttentionType` entry to ``ATTENTION_TYPES`` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .coord import CoordAtt
from .criss_cross import RecurrentCrissCross
from .danet import DualAttention
from .eca import ECALayer, adaptive_kernel_size
from .gc import ContextBlock
from .mhsa import MHSA2d
from .nonlocal_block import NonLocalBlock2D
from .se import SELayer
from .stn import SpatialTransformer
from .triplet import TripletAttention

# Where a module sits in a backbone:
#   "block"        inside every residual block, after the last BN, before the residual sum (attribute block_attr)
#   "between"      after every stage but the last (BAM: bam1, bam2, ...)
#   "after_last"   after the last stage (CCNet, DANet heads: <block_attr><stage>)
#   "after_second_last"  after the second-to-last stage (Non-local)
#   "replace_conv2_last" replaces the 3x3 conv2 of every block in the last stage (BoTNet's MHSA)
#   "input"        in front of the backbone, on the image (spatial transformer)
PLACEMENTS = ("block", "between", "after_last", "after_second_last", "replace_conv2_last", "input")


@dataclass(frozen=True)
class AttentionType:
    """How to build one attention type and where it sits in a residual block."""

    key: str                                  # short name used in model names and model cards
    display: str                              # human name for the page and reports
    block_attr: str                           # attribute name inside a residual block (official names)
    factory: Callable[..., nn.Module]         # (channels, **kwargs) -> module
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    placement: str = "block"

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
        AttentionType("bam", "BAM", "bam", BAM, "Park et al., BAM: Bottleneck Attention Module, BMVC 2018",
                      placement="between"),
        AttentionType("nonlocal", "Non-local", "nl", NonLocalBlock2D,
                      "Wang et al., Non-local Neural Networks, CVPR 2018", placement="after_second_last"),
        AttentionType("gc", "Global Context", "context_block", ContextBlock,
                      "Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond, ICCVW 2019"),
        AttentionType("cc", "Criss-Cross", "cc", RecurrentCrissCross,
                      "Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation, ICCV 2019",
                      defaults={"head": True}, placement="after_last"),
        AttentionType("danet", "DANet (position + channel)", "danet", DualAttention,
                      "Fu et al., Dual Attention Network for Scene Segmentation, CVPR 2019", placement="after_last"),
        AttentionType("mhsa", "Self-attention (MHSA)", "conv2", MHSA2d,
                      "Srinivas et al., Bottleneck Transformers for Visual Recognition, CVPR 2021",
                      placement="replace_conv2_last"),
        AttentionType("stn", "Spatial transformer", "stn", SpatialTransformer,
                      "Jaderberg et al., Spatial Transformer Networks, NeurIPS 2015", placement="input"),
    )
}


def attention_type(key: str) -> AttentionType:
    """Look up an attention type by key, with the list of valid keys in the error."""
    try:
        return ATTENTION_TYPES[key]
    except KeyError:
        raise KeyError(f"unknown attention type {key!r}; choose one of {sorted(ATTENTION_TYPES)}") from None


CORE_TYPES = ("se", "eca", "cbam", "triplet", "coord")

__all__ = [
    "ATTENTION_TYPES", "AttentionType", "CORE_TYPES", "PLACEMENTS", "attention_type",
    "BAM", "CBAM", "ContextBlock", "CoordAtt", "DualAttention", "ECALayer", "MHSA2d", "NonLocalBlock2D",
    "RecurrentCrissCross", "SELayer", "SpatialTransformer", "TripletAttention", "adaptive_kernel_size",
]
