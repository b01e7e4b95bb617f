"""Where to take a CAM from in any network, and how its tokens fold back into a map.

Grad-CAM needs a layer whose output is still spatial: the last feature stage of a CNN, or the last
block of a vision transformer (pytorch-grad-cam's documented choices: a ViT's last block ``norm1``,
a Swin's last stage's last block ``norm1``). Users should not have to know those names, so
:func:`default_cam_layer` finds them for the project's own architectures, torchvision and timm
models, and — as a last resort — by one dry forward pass. :func:`token_layout` and
:func:`channels_last` tell the CAM engine how to turn a transformer layer's output into
``(B, C, H, W)``: drop the prefix tokens (class, distillation, register) and fold the patch grid,
or permute a Swin-style ``(B, H, W, C)`` map. Nothing here runs the engine or changes a model.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from attnviz.errors import TargetError

DEFAULT_PROBE_SIZE = 224


# ---- family checks (by structure, so subclasses and near-copies are recognised too) ---------------

def _is_project_resnet(model: nn.Module) -> bool:
    from models.resnet import StageSlotsMixin

    return isinstance(model, StageSlotsMixin)


def _children(module: nn.Module | None) -> list[nn.Module]:
    return list(module.children()) if module is not None else []


def _token_embedding(model: nn.Module) -> nn.Module | None:
    """The patch embedding of a token model (timm ``patch_embed``; MLP-Mixer calls it ``stem``)."""
    for attr in ("patch_embed", "stem"):
        embed = getattr(model, attr, None)
        if embed is not None and hasattr(embed, "grid_size"):
            return embed
    return None


def _is_torchvision(model: nn.Module, class_name: str) -> bool:
    return type(model).__name__ == class_name and type(model).__module__.startswith("torchvision.")


def _nhwc_model(model: nn.Module) -> bool:
    """Models whose stages carry (B, H, W, C) maps: timm declares it (Swin), torchvision's Swin does not."""
    return getattr(model, "output_fmt", None) == "NHWC" or _is_torchvision(model, "SwinTransformer")


def _vit_blocks(model: nn.Module) -> list[str] | None:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0 or _token_embedding(model) is None:
        return None
    if not hasattr(blocks[-1], "norm1"):
        return None
    return [f"blocks.{i}.norm1" for i in range(len(blocks)) if hasattr(blocks[i], "norm1")]


def _swin_stages(model: nn.Module) -> list[str] | None:
    """Last block ``norm1`` of every stage of a timm Swin (``layers``) or torchvision Swin (``features``)."""
    if _is_torchvision(model, "SwinTransformer"):
        found = []
        for i, stage in enumerate(model.features):
            last = _children(stage)[-1:] if isinstance(stage, nn.Sequential) else []
            if last and hasattr(last[0], "norm1"):
                found.append(f"features.{i}.{len(stage) - 1}.norm1")
        return found or None
    stages = getattr(model, "layers", None)
    if not isinstance(stages, (nn.Sequential, nn.ModuleList)) or len(stages) == 0:
        return None
    found = []
    for i, stage in enumerate(stages):
        blocks = getattr(stage, "blocks", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and hasattr(blocks[-1], "norm1"):
            found.append(f"layers.{i}.blocks.{len(blocks) - 1}.norm1")
    return found if found and found[-1].startswith(f"layers.{len(stages) - 1}.") else None


def _project_resnet_layers(model: nn.Module) -> list[str]:
    from models.resnet import last_stage_attention_name, stages

    n = len(stages(model))
    names = [f"layer{i}" for i in range(max(1, n - 2), n + 1)]
    head = last_stage_attention_name(model)  # e.g. a CCNet / DANet head applied after the last stage
    return names + ([head] if head else [])


def _timm_feature_modules(model: nn.Module) -> list[str] | None:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info or not isinstance(info[-1], dict):
        return None
    names = [str(f.get("module", "")) for f in info if f.get("module")]
    names = [n for n in names if _has_module(model, n) and not isinstance(model.get_submodule(n), nn.Identity)]
    if not names:
        return None
    # timm's EfficientNet runs its 1x1 head conv (conv_head + bn2) before pooling: the last spatial map,
    # as torchvision's features[-1] is for the same network
    if type(model).__name__ == "EfficientNet" and _has_module(model, "bn2") and _has_module(model, "conv_head"):
        names.append("bn2")
    return names[-3:]


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _sequential_last(model: nn.Module, attr: str) -> list[str] | None:
    seq = getattr(model, attr, None)
    if isinstance(seq, nn.Sequential) and len(seq):
        names = [name for name, _ in seq.named_children()]
        return [f"{attr}.{n}" for n in names[-2:]]
    return None


# ---- public: layers -----------------------------------------------------------------------------

def cam_layer_choices(model: nn.Module, probe_size: int | None = None) -> tuple[str, ...]:
    """Sensible CAM layers of ``model`` (dotted module names), deepest — the default — last.

    Rules, in order: the project's ResNets (last stages, then a head that follows the last stage), the
    CA-MobileNetV2 (``conv``), vision transformers with a patch embedding (every block's ``norm1``),
    Swin (each stage's last block ``norm1``), torchvision's ViT (``encoder_layer_N.ln_1``), timm models
    (``feature_info``), ResNets (``layer2..4``), torchvision RegNet (``trunk_output``) and ``features``
    stacks (MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet); anything else by one dry forward pass.
    """
    if _is_project_resnet(model):
        return tuple(_project_resnet_layers(model))
    if type(model).__name__ == "CAMobileNetV2" and isinstance(getattr(model, "conv", None), nn.Sequential):
        return ("conv",)
    vit = _vit_blocks(model)
    if vit:
        return tuple(vit)
    swin = _swin_stages(model)
    if swin:
        return tuple(swin)
    if _is_torchvision(model, "VisionTransformer"):
        layers = [name for name, _ in model.encoder.layers.named_children()]
        return tuple(f"encoder.layers.{n}.ln_1" for n in layers)
    timm_names = _timm_feature_modules(model)
    if timm_names:
        return tuple(timm_names)
    if all(_has_module(model, f"layer{i}") for i in (2, 3, 4)):
        return ("layer2", "layer3", "layer4")
    if _is_torchvision(model, "RegNet"):
        blocks = [name for name, _ in model.trunk_output.named_children()]
        return tuple(f"trunk_output.{n}" for n in blocks[-2:])
    features = _sequential_last(model, "features")
    if features:
        return tuple(features)
    return (_probe_last_spatial(model, probe_size),)


def default_cam_layer(model: nn.Module, probe_size: int | None = None) -> str:
    """The dotted name of the layer Grad-CAM should use for ``model`` when the user names none.

    ``probe_size`` is only used by the last-resort dry forward pass (default: the model's pretrained
    config input size, else 224). Raises :class:`TargetError` when no spatial layer can be found.
    """
    return cam_layer_choices(model, probe_size)[-1]


def _probe_size(model: nn.Module, given: int | None) -> tuple[int, int]:
    if given:
        return given, given
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size and len(size) == 3:
        return int(size[1]), int(size[2])
    return DEFAULT_PROBE_SIZE, DEFAULT_PROBE_SIZE


def _probe_last_spatial(model: nn.Module, probe_size: int | None) -> str:
    """The last module (by completion order) whose output is a (B, C, H, W) map with H, W > 1.

    Modules called more than once (a shared ReLU) are skipped: a hook on them sees several tensors.
    """
    calls: dict[str, int] = {}
    spatial: list[str] = []
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
                spatial.append(name)
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None and param.device.type != "meta" else torch.device("cpu")
        h, w = _probe_size(model, probe_size)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w, device=device))
    except Exception as exc:  # any failure means: we cannot tell, say so readably
        raise TargetError(f"Cannot find a CAM layer for {type(model).__name__} automatically (a test forward "
                          f"pass failed: {type(exc).__name__}); name one with layer='<dotted module name>'.") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    once = [n for n in spatial if calls.get(n) == 1]
    if not once:
        raise TargetError(f"{type(model).__name__} has no layer with a spatial (B, C, H, W) output; name one with "
                          "layer='<dotted module name>'.")
    return once[-1]


# ---- public: token layouts ------------------------------------------------------------------------

def _prefix_tokens(model: nn.Module) -> int:
    if hasattr(model, "num_prefix_tokens"):
        return int(model.num_prefix_tokens)
    count = 0
    for attr in ("cls_token", "dist_token"):
        if getattr(model, attr, None) is not None:
            count += 1
    reg = getattr(model, "reg_token", None)
    if isinstance(reg, torch.Tensor) and reg.dim() == 3:
        count += int(reg.shape[1])
    return count


def token_layout(model: nn.Module, num_tokens: int | None = None,
                 input_hw: Sequence[int] | None = None) -> tuple[int, tuple[int, int]] | None:
    """``(num_prefix_tokens, (grid_h, grid_w))`` for a model whose layers output (B, N, C) tokens, else None.

    Read from timm's ``patch_embed.grid_size`` / ``num_prefix_tokens`` (class, distillation and register
    tokens), torchvision's ``VisionTransformer`` (``image_size // patch_size``, one class token) or an
    MLP-Mixer ``stem``. ``input_hw``: the actual input size, for models built for another size
    (the grid is recomputed from the patch stride). ``num_tokens``: the N the engine saw; when the
    model-level count does not add up (CaiT's patch-only blocks carry no class token) the layout is
    reconciled with it, or None is returned when it cannot be.
    Swin-style models carry (B, H, W, C) maps, not token sequences: None (see :func:`channels_last`).
    """
    if _nhwc_model(model):
        return None
    embed = _token_embedding(model)
    if embed is not None:
        grid = tuple(int(g) for g in embed.grid_size)
        if input_hw is not None and tuple(input_hw) != tuple(getattr(embed, "img_size", ()) or ()):
            if hasattr(embed, "dynamic_feat_size"):
                grid = tuple(int(g) for g in embed.dynamic_feat_size(tuple(int(v) for v in input_hw)))
            elif hasattr(embed, "patch_size"):
                ph, pw = (embed.patch_size, embed.patch_size) if isinstance(embed.patch_size, int) else embed.patch_size
                grid = (int(input_hw[0]) // ph, int(input_hw[1]) // pw)
        prefix = _prefix_tokens(model) if embed is getattr(model, "patch_embed", None) else 0
    elif _is_torchvision(model, "VisionTransformer"):
        h, w = (tuple(input_hw) if input_hw is not None else (model.image_size, model.image_size))
        grid, prefix = (int(h) // model.patch_size, int(w) // model.patch_size), 1
    else:
        return None
    gh, gw = grid
    if num_tokens is not None and prefix + gh * gw != num_tokens:
        if gh * gw == num_tokens:
            prefix = 0
        elif num_tokens > prefix and math.isqrt(num_tokens - prefix) ** 2 == num_tokens - prefix:
            side = math.isqrt(num_tokens - prefix)
            gh = gw = side
        else:
            return None
    return prefix, (gh, gw)


def channels_last(model: nn.Module, layer: str) -> bool:
    """True when ``layer``'s 4-D output is (B, H, W, C) — every stage of a Swin — and must be permuted.

    The convolution inside a Swin's patch embedding still returns (B, C, H, W).
    """
    if not _nhwc_model(model):
        return False
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise TargetError(f"layer {layer!r} is not in this model") from None
    return not isinstance(module, (nn.Conv2d, nn.BatchNorm2d))
