"""Name -> builder registry for every architecture attnviz can construct (random weights, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from . import mobilenetv2, resnet, small_resnet, vit
from .attention import ATTENTION_TYPES


@dataclass(frozen=True)
class Architecture:
    """One buildable network: its builder, attention type, and the official source it mirrors."""

    name: str
    builder: Callable[..., nn.Module]
    attention: str            # "none" or a key of ATTENTION_TYPES
    family: str               # "resnet", "mobilenet_v2", "small_resnet", "vit"
    source: str = ""          # the official repository whose keys this layout reproduces

    def build(self, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
        return self.builder(num_classes=num_classes, **kwargs)


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in _REGISTRY:
        raise ValueError(f"architecture {arch.name!r} registered twice")
    _REGISTRY[arch.name] = arch
    return arch


def _resnet_builder(depth: int, attention: str | None) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **kw: Any) -> nn.Module:
        return resnet.resnet(depth, attention, num_classes, **kw)
    return build


def _eca_builder(depth: int) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **kw: Any) -> nn.Module:
        return resnet.eca_resnet(depth, num_classes, **kw)
    return build


_OFFICIAL_RESNET_SOURCES = {
    "bam": "BAM paper form x * (1 + sigmoid(Mc + Ms)); official keys (for the released checkpoint use "
           "bam_resnet50_official)",
    "se": "moskomule/senet.pytorch (senet/se_resnet.py)",
    "eca": "BangguWu/ECANet (models/eca_resnet.py, k_size 3,5,5,7)",
    "cbam": "Jongchan/attention-module (MODELS/model_resnet.py, att_type='CBAM')",
    "triplet": "landskape-ai/triplet-attention (MODELS/resnet.py)",
}
_PREFIX = {"se": "se", "eca": "eca", "cbam": "cbam", "triplet": "triplet", "coord": "ca", "bam": "bam",
           "nonlocal": "nonlocal", "gc": "gc", "cc": "cc", "danet": "danet", "mhsa": "bot", "stn": "stn"}

for _depth in (18, 34, 50):
    register(Architecture(f"resnet{_depth}", _resnet_builder(_depth, None), "none", "resnet",
                          "torchvision ResNet (also Jongchan/attention-module with att_type=None)"))
    for _key in ATTENTION_TYPES:
        _builder = _eca_builder(_depth) if _key == "eca" else _resnet_builder(_depth, _key)
        _source = _OFFICIAL_RESNET_SOURCES.get(_key, "") if _depth == 50 else ""
        register(Architecture(f"{_PREFIX[_key]}_resnet{_depth}", _builder, _key, "resnet", _source))

def _bam_official_builder(num_classes: int = 1000, **kw: Any) -> nn.Module:
    return resnet.resnet(50, "bam", num_classes, combine="product", **kw)


register(Architecture("bam_resnet50_official", _bam_official_builder, "bam", "resnet",
                      "Jongchan/attention-module (MODELS/model_resnet.py, att_type='BAM'; bam.py multiplies the "
                      "branches: x * (1 + sigmoid(Mc * Ms)))"))
register(Architecture("resnet50_baseline_jongchan", _resnet_builder(50, None), "none", "resnet",
                      "Jongchan/attention-module ResidualNet('ImageNet', 50, 1000, None)"))
register(Architecture("mobilenet_v2", mobilenetv2.mobilenet_v2, "none", "mobilenet_v2", "torchvision"))
register(Architecture("triplet_mobilenet_v2", mobilenetv2.triplet_mobilenet_v2, "triplet", "mobilenet_v2",
                      "landskape-ai/triplet-attention (MODELS/mobilenet.py)"))
register(Architecture("ca_mobilenet_v2", mobilenetv2.ca_mobilenet_v2, "coord", "mobilenet_v2",
                      "houqb/CoordAttention (mbv2_ca.py)"))


def _small_builder(attention: str | None) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **kw: Any) -> nn.Module:
        kw.setdefault("attention", attention)
        return small_resnet.small_resnet(num_classes=num_classes, **kw)
    return build


# ``small_resnet`` takes attention=... ; the fixed-attention names are what the bundled zoo ships.
register(Architecture("small_resnet", _small_builder(None), "none", "small_resnet"))
for _key in ATTENTION_TYPES:
    register(Architecture(f"small_resnet_{_key}", _small_builder(_key), _key, "small_resnet"))
register(Architecture("small_vit", vit.small_vit, "vit", "vit", "timm VisionTransformer at the zoo's size"))
register(Architecture("hybrid_vit", vit.hybrid_vit, "vit", "vit",
                      "timm VisionTransformer with a compact-ResNet trunk as patch embedding (ViT hybrid)"))


def get(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def available() -> list[str]:
    """All registered architecture names, sorted."""
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` with random weights and a ``num_classes``-way classifier."""
    return get(name).build(num_classes=num_classes, **kwargs)
