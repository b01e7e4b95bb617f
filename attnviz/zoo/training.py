"""Train a compact-zoo model from its recipe and write its weights and model card.

The CNN variants share one recipe (:data:`RECIPE`: same seed, data, schedule, augmentation, epochs) so their
maps and scores compare; the ViT has its own (:data:`RECIPES` "vit"), recorded in its card. The loop and its
resumable state are :mod:`attnviz.zoo.train_loop`'s; the card's schema is :mod:`attnviz.zoo.cards`'.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

import models
from attnviz.core.specs import IMAGENET_MEAN, IMAGENET_STD
from attnviz.data import synth
from attnviz.data.scenes import TEST_SEED, TRAIN_SEED, VAL_SEED, cached_scenes
from attnviz.errors import AttnvizError
from attnviz.zoo.cards import PROJECT_ROOT, WEIGHTS_DIR, read_card, write_card
from attnviz.zoo.files import read_checkpoint, sha256_file
from attnviz.zoo.train_loop import TrainResult, accuracy, state_dir, train_model
from models.attention import ATTENTION_TYPES

RECIPE: dict = {
    "train_scenes": 96_000,
    "val_scenes": 2_000,
    "test_scenes": 5_000,
    "image_size": synth.IMAGE_SIZE,
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "SGD(momentum=0.9, nesterov=True)",
    "lr": 0.1,
    "schedule": "linear warm-up 300 steps, cosine to 0",
    "weight_decay": 5e-4,
    "label_smoothing": 0.05,
    "augmentation": "random horizontal flip, random translation +-8 px (reflect pad), brightness/contrast jitter 0.15",
    "torch_seed": 0,
    "train_seed": TRAIN_SEED,
    "val_seed": VAL_SEED,
    "test_seed": TEST_SEED,
    "threads": 2,
    "memory_format": "channels_last",
}


# The ViT's own recipe (docs/vit_trials): the ViT paper's hybrid — a compact-ResNet trunk (stem + two stages,
# started from the bundled baseline's weights and learning at a tenth of the rate) as the patch embedding of a
# 6-block transformer with a class token and global self-attention — trained with AdamW. The shared SGD recipe
# leaves a plain 8-px-patch ViT at chance and AdamW alone reaches 38 % in the shared 2 epochs.
VIT_RECIPE: dict = {
    **RECIPE,
    "architecture": "hybrid_vit",
    "optimizer": "AdamW(betas=(0.9, 0.999))",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "memory_format": None,
    "init_from": "baseline",
    "init_prefix": "patch_embed.trunk.",
    "init_modules": ["conv1", "bn1", "conv2", "bn2", "layer1", "layer2"],
    "slow_prefix": "patch_embed.trunk.",
    "slow_lr_scale": 0.1,
    "val_every": 250,
    "epochs": 1,   # a 2-epoch run was at 96.0 % validation accuracy after 500 of its 3,000 steps (docs/vit_trials)
}
RECIPES: dict[str, dict] = {"shared": RECIPE, "vit": VIT_RECIPE}

ZOO_ATTENTION = ("none",) + tuple(ATTENTION_TYPES)
TRAINABLE = ZOO_ATTENTION + ("vit",)
DISPLAY = {"none": "Baseline", **{key: entry.display for key, entry in ATTENTION_TYPES.items()},
           "vit": "ViT (hybrid, self-attention)"}


def count_flops(model: nn.Module, size: int) -> int:
    """Multiply-accumulates x 2 of one forward at ``size`` px (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        # weights being written by an earlier variant of the same run are not code: leave them out
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "attnviz", "models", ":!models/weights"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def zoo_name(attention: str, seed: int | None = None) -> str:
    """Bundled model names are the attention keys, with "baseline" for none; a training-seed replicate
    (any ``torch_seed`` other than the recipe's) is ``<name>_seed<S>``."""
    name = "baseline" if attention == "none" else attention
    return name if seed in (None, RECIPE["torch_seed"]) else f"{name}_seed{seed}"


def architecture_for(attention: str) -> str:
    if attention == "vit":
        return "small_vit"
    return "small_resnet" if attention == "none" else f"small_resnet_{attention}"


def cam_layers(model: nn.Module) -> tuple[str, list[str]]:
    """(default CAM layer, selectable layers) for a zoo model: the last stage (or the head after it) for the
    CNNs; each block's ``norm1`` for the ViT (pytorch-grad-cam's documented choice, last block by default)."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None:
        layers = [f"blocks.{i}.norm1" for i in range(len(blocks))]
        return layers[-1], layers
    from models.resnet import last_stage_attention_name

    cam_layer = last_stage_attention_name(model) or "layer3"  # a head after layer3 (CCNet, DANet) is explained too
    return cam_layer, ["layer1", "layer2", "layer3"] + ([cam_layer] if cam_layer != "layer3" else [])


def _recipe_digest(recipe: dict) -> str:
    return hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()[:12]


def state_path_for(attention: str, recipe: dict) -> Path:
    """The resumable state of one (model, recipe) run: ``<state_dir>/<name>-<recipe digest>.pt``."""
    return state_dir() / f"{zoo_name(attention, recipe['torch_seed'])}-{_recipe_digest(recipe)}.pt"


def _bundled_weights(name: str) -> dict[str, torch.Tensor]:
    """A bundled model's float32 weights, checked against its card's hash (a recipe starts from them)."""
    card_path = WEIGHTS_DIR / f"{name}.json"
    weights = card_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise AttnvizError(f"The recipe starts from the bundled {name!r}, whose weights are not in {WEIGHTS_DIR}.")
    if sha256_file(weights) != read_card(card_path)["sha256"]:
        raise AttnvizError(f"{weights.name} does not match its model card's sha256.")
    return {k: v.float() if v.is_floating_point() else v for k, v in read_checkpoint(weights).items()}


def build_for_recipe(attention: str, recipe: dict) -> nn.Module:
    """The untrained model a recipe starts from: seeded initialisation, then any weights it borrows."""
    torch.manual_seed(recipe["torch_seed"])
    model = models.build(recipe.get("architecture") or architecture_for(attention), num_classes=len(synth.CLASS_NAMES))
    if recipe.get("init_from"):
        source = _bundled_weights(recipe["init_from"])
        borrowed = {recipe["init_prefix"] + k: v for k, v in source.items()
                    if k.split(".")[0] in recipe["init_modules"]}
        missing = [k for k in model.state_dict() if k.startswith(recipe["init_prefix"]) and k not in borrowed]
        if missing:
            raise AttnvizError(f"{recipe['init_from']} has no weights for {missing[0]} (and {len(missing) - 1} more).")
        model.load_state_dict(borrowed, strict=False)
    return model


def _teacher(recipe: dict, device: torch.device) -> nn.Module | None:
    if not recipe.get("distill_from"):
        return None
    teacher = models.build(architecture_for("none"), num_classes=len(synth.CLASS_NAMES))
    teacher.load_state_dict(_bundled_weights(recipe["distill_from"]))
    return teacher.eval().to(device)


def _save_weights(model: nn.Module, path: Path, arch: str, attention: str) -> nn.Module:
    """fp16 weights (keeps the repository light); returns the float32 model rebuilt from them, as shipped."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"architecture": arch, "attention": attention})
    shipped = models.build(arch, num_classes=len(synth.CLASS_NAMES))
    shipped.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return shipped.eval()


def _command(attention: str, recipe_name: str, recipe: dict, target: torch.device) -> str:
    base = RECIPES[recipe_name]
    flags = " --recipe vit" if recipe_name == "vit" else ""
    flags += "".join(f" --{flag} {recipe[key]}" for key, flag in (("epochs", "epochs"), ("train_scenes", "scenes"))
                     if recipe[key] != base[key])
    if zoo_name(attention, recipe["torch_seed"]) != zoo_name(attention):
        flags += f" --seed {recipe['torch_seed']}"
    return f"attnviz train --attention {attention}{flags}" + (f" --device {target.type}" if target.type != "cpu" else "")


def _card(attention: str, arch: str, shipped: nn.Module, result: TrainResult, test_acc: float, recipe: dict,
          recipe_name: str, target: torch.device, commit: str, weights_path: Path) -> dict:
    name = zoo_name(attention, recipe["torch_seed"])
    size = recipe["image_size"]
    cam_layer, layers = cam_layers(shipped)
    hardware = (f"{platform.machine()}, {torch.cuda.get_device_name(target)}" if target.type == "cuda" else
                f"{platform.machine()}, {os.cpu_count()} CPUs")
    card = {
        "name": name, "display_name": DISPLAY[attention],
        "order": TRAINABLE.index(attention) if attention in TRAINABLE else 50,
        "architecture": arch, "attention": attention, "class_names": list(synth.CLASS_NAMES),
        "input_size": size, "resize_size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "default_layer": cam_layer, "layers": layers,
        "parameters": sum(p.numel() for p in shipped.parameters()), "flops": count_flops(shipped, size),
        "test_accuracy": round(test_acc, 4),
        "test_set": {"generator": "attnviz.synth.generate", "seed": recipe["test_seed"], "n": recipe["test_scenes"],
                     "synth_version": synth.VERSION},
        "val_accuracy": round(result.val_accuracy, 4), "training_seconds": round(result.seconds, 1),
        "training_steps": result.steps, "history": result.history,
        "final_train_loss": round(float(np.mean(result.losses[-50:])), 4), "recipe": recipe,
        "data_seed": recipe["train_seed"],
        "machine": f"{hardware}, torch {torch.__version__}, {recipe.get('threads', 2)} threads",
        "device": str(target), "project_commit": commit, "weights_dtype": "float16",
        "sha256": sha256_file(weights_path), "command": _command(attention, recipe_name, recipe, target),
    }
    if recipe_name != "shared":
        card["recipe_name"] = recipe_name
    if result.resumed_from:
        card["resumed_from_step"] = result.resumed_from
    if name != zoo_name(attention):
        card["replicate_of"] = zoo_name(attention)
        card["order"] = 100 + card["order"]
    return card


def train_variant(attention: str, out_dir: Path, recipe: dict = RECIPE, progress: bool = True,
                  log: Callable[[str], None] = print, commit: str | None = None, device: str | None = "cpu",
                  recipe_name: str = "shared", resume: bool = False) -> dict:
    """Train one zoo model from scratch (or from its resumable state, with ``resume``) and write
    ``<name>.safetensors`` + ``<name>.json`` to ``out_dir``.

    ``commit`` is the project commit the code was loaded from (taken before training starts, so edits made
    while a long run is going do not mislabel it). A recipe whose ``torch_seed`` differs from
    :data:`RECIPE`'s is a training-seed replicate, named ``<name>_seed<S>``.
    """
    from attnviz.core.devices import resolve_device

    commit = commit or git_commit()
    torch.set_num_threads(recipe.get("threads", 2))
    size = recipe["image_size"]
    log(f"[{attention}] generating/loading scenes (train seed {recipe['train_seed']}, {recipe['train_scenes']} scenes)")
    train = cached_scenes(recipe["train_scenes"], recipe["train_seed"], size, progress=progress, masks=False)
    val = cached_scenes(recipe["val_scenes"], recipe["val_seed"], size, progress=progress)
    test = cached_scenes(recipe["test_scenes"], recipe["test_seed"], size, progress=progress)
    arch = recipe.get("architecture") or architecture_for(attention)
    model = build_for_recipe(attention, recipe)
    target = resolve_device(device or "cpu")
    state_path = state_path_for(attention, recipe)
    log(f"[{attention}] resumable state every few hundred steps in {state_path}")
    result = train_model(model, train, val, recipe, progress=progress, log=log, device=target,
                         state_path=state_path, resume=resume, teacher=_teacher(recipe, target))
    name = zoo_name(attention, recipe["torch_seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / f"{name}.safetensors"
    shipped = _save_weights(result.model.cpu(), weights_path, arch, attention)
    test_acc = accuracy(shipped.to(target), test.images, test.labels)
    card = _card(attention, arch, shipped.cpu(), result, test_acc, recipe, recipe_name, target, commit, weights_path)
    write_card(out_dir / f"{name}.json", card)
    state_path.unlink(missing_ok=True)
    log(f"[{attention}] test accuracy {test_acc:.4f} (seed {recipe['test_seed']}, n={recipe['test_scenes']}), "
        f"trained in {result.seconds / 60:.1f} min")
    return card
