"""ImageNet-trained models from torchvision and timm — available only once their weights are on disk.

Nothing here downloads at run time. ``attnviz weights download`` fetches the files into
:func:`weights_dir` (``ATTNVIZ_WEIGHTS_DIR``, default ``~/.cache/attnviz/weights``) and verifies each one
before it is kept: against the SHA-256 prefix its publisher put in the file name, or — for files whose
name carries no hash (Hugging Face ``model.safetensors``) — against a full SHA-256 pinned here together
with where that value came from (:attr:`ImageNetSource.pin_source`). A source with neither is refused,
never downloaded unverified. Until then the registry lists the model as "not downloaded" and loading it
raises a message with the command to run. Class names come from torchvision's bundled weight metadata
(no download); preprocessing of the timm transformers comes from timm's pretrained config (offline).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from attnviz.core.specs import ModelSpec, WeightsSource
from attnviz.errors import AttnvizError

if TYPE_CHECKING:
    from torch import nn


def weights_dir() -> Path:
    root = os.environ.get("ATTNVIZ_WEIGHTS_DIR")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "attnviz" / "weights"


@dataclass(frozen=True)
class ImageNetSource:
    name: str            # registry name shown in the page and the CLI
    display: str
    library: str         # "torchvision" or "timm"
    arch: str            # the library's model name
    url: str             # the publisher's file; its name carries a SHA-256 prefix
    attention: str       # "none", "se", "eca", "gc"
    layers: tuple[str, ...]  # selectable CAM layers, deepest (default) last
    resize: int = 256
    crop: int = 224
    sha256: str = ""     # full pin, for files whose published name carries no hash
    pin_source: str = ""  # where that pin comes from (shown by `attnviz weights list`)
    local_name: str = ""  # file name in the cache when the URL's ("model.safetensors") is not unique
    timm_cfg: str = ""   # timm "model.tag" whose pretrained config gives the preprocessing (mean/std, crop_pct, ...)
    # that preprocessing, pinned here so listing the models never imports timm (a test checks it equals timm's):
    # (crop side, shorter side before the crop, mean, std, interpolation)
    pinned: tuple = ()

    @property
    def filename(self) -> str:
        return self.local_name or self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        match = re.search(r"-([0-9a-f]{8,64})\.pth$", self.url.rsplit("/", 1)[-1])
        return match.group(1) if match else ""

    @property
    def verification(self) -> str:
        """How a download of this source is checked, in words (never claims more than is done)."""
        if self.sha256:
            return f"full SHA-256 pinned in attnviz ({self.pin_source})"
        if self.sha256_prefix:
            return f"SHA-256 prefix {self.sha256_prefix} from the publisher's file name"
        return "none known: download refused"

    @property
    def path(self) -> Path:
        return weights_dir() / self.library / self.filename


SOURCES: tuple[ImageNetSource, ...] = (
    ImageNetSource("tv-resnet50", "ResNet-50 (torchvision)", "torchvision", "resnet50",
                   "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", "none",
                   ("layer2", "layer3", "layer4"), 232, 224),
    ImageNetSource("tv-mobilenet_v2", "MobileNetV2 (torchvision)", "torchvision", "mobilenet_v2",
                   "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth", "none",
                   ("features.14", "features.18"), 232, 224),
    ImageNetSource("tv-mobilenet_v3_large", "MobileNetV3-L, SE (torchvision)", "torchvision", "mobilenet_v3_large",
                   "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth", "se",
                   ("features.12", "features.16"), 232, 224),
    ImageNetSource("tv-efficientnet_b0", "EfficientNet-B0, SE (torchvision)", "torchvision", "efficientnet_b0",
                   "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth", "se",
                   ("features.6", "features.8"), 256, 224),
    ImageNetSource("tv-regnet_y_800mf", "RegNetY-800MF, SE (torchvision)", "torchvision", "regnet_y_800mf",
                   "https://download.pytorch.org/models/regnet_y_800mf-58fc7688.pth", "se",
                   ("trunk_output.block3", "trunk_output.block4"), 232, 224),
    ImageNetSource("timm-resnet50", "ResNet-50 a1 (timm)", "timm", "resnet50",
                   "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-rsb-weights/"
                   "resnet50_a1_0-14fe96d1.pth", "none", ("layer2", "layer3", "layer4"), 236, 224),
    ImageNetSource("timm-seresnet50", "SE-ResNet-50 a1 (timm)", "timm", "seresnet50",
                   "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights/"
                   "seresnet50_a1_0-ffa00869.pth", "se", ("layer2", "layer3", "layer4"), 236, 224),
    ImageNetSource("timm-legacy_seresnet50", "SE-ResNet-50, Cadene port of the SENet release (timm)", "timm",
                   "legacy_seresnet50", "https://github.com/rwightman/pytorch-image-models/releases/download/"
                   "v0.1-cadene/se_resnet50-ce0d4300.pth", "se", ("layer2", "layer3", "layer4"), 256, 224),
    ImageNetSource("timm-ecaresnet50d", "ECA-ResNet-50-D (timm)", "timm", "ecaresnet50d",
                   "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-tresnet/"
                   "ecaresnet50d-93c81e3b.pth", "eca", ("layer2", "layer3", "layer4"), 256, 224),
    ImageNetSource("timm-gcresnet50t", "GC-ResNet-50-T (timm)", "timm", "gcresnet50t",
                   "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-attn-weights/"
                   "gcresnet50t_256-96374d1c.pth", "gc", ("stages.1", "stages.2", "stages.3"), 284, 256),
    # Vision transformers. CAM layers: a ViT's last block norm1, a Swin's last stage's last block norm1
    # (pytorch-grad-cam's documented choices); preprocessing from timm's pretrained config (timm_cfg).
    ImageNetSource("timm-vit_small_patch16_224", "ViT-S/16 AugReg, ImageNet-1k (timm)", "timm",
                   "vit_small_patch16_224", "https://huggingface.co/timm/vit_small_patch16_224.augreg_in1k/resolve/"
                   "9f817e4a98515abc212f00cd836b960c556029d8/model.safetensors", "vit",
                   ("blocks.9.norm1", "blocks.10.norm1", "blocks.11.norm1"),
                   sha256="c20a91d93f4757b0f581519f21ad91a875cf041764873a7a5bccc8e36f360dbf",
                   pin_source="Git LFS object of timm/vit_small_patch16_224.augreg_in1k model.safetensors as pinned by "
                              "a public project's download script; Hugging Face publishes no hash in the file name",
                   local_name="vit_small_patch16_224.augreg_in1k.safetensors",
                   timm_cfg="vit_small_patch16_224.augreg_in1k",
                   pinned=(224, 248, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")),
    ImageNetSource("timm-deit_small_patch16_224", "DeiT-S (Facebook release, timm layout)", "timm",
                   "deit_small_patch16_224", "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
                   "vit", ("blocks.9.norm1", "blocks.10.norm1", "blocks.11.norm1"),
                   timm_cfg="deit_small_patch16_224.fb_in1k",
                   pinned=(224, 248, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")),
    ImageNetSource("timm-swin_tiny_patch4_window7_224", "Swin-T (timm)", "timm", "swin_tiny_patch4_window7_224",
                   "https://huggingface.co/timm/swin_tiny_patch4_window7_224.ms_in1k/resolve/"
                   "4cc3a7275b50b53a7bec45f32c236ebe64227cff/model.safetensors", "swin",
                   ("layers.1.blocks.1.norm1", "layers.2.blocks.5.norm1", "layers.3.blocks.1.norm1"),
                   sha256="fb01861f793143135fa0d6cd97b1631e4b33eaa3ee162bbea9e62de1c76ebac1",
                   pin_source="Git LFS object of timm/swin_tiny_patch4_window7_224.ms_in1k model.safetensors at this "
                              "revision (114,286,722 bytes), the same value in several independent public projects; "
                              "Hugging Face publishes no hash in the file name",
                   local_name="swin_tiny_patch4_window7_224.ms_in1k.safetensors",
                   timm_cfg="swin_tiny_patch4_window7_224.ms_in1k",
                   pinned=(224, 248, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")),
)
SOURCES_BY_NAME = {s.name: s for s in SOURCES}


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names shipped inside torchvision's weight metadata (no download), read from
    torchvision's source file so that listing the models imports neither torch nor torchvision."""
    import ast
    import importlib.util

    try:
        meta = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0]) / "models" / "_meta.py"
        for node in ast.parse(meta.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_IMAGENET_CATEGORIES"
                                                    for t in node.targets):
                return tuple(ast.literal_eval(node.value))
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError):
        pass
    from torchvision.models import ResNet50_Weights  # the same list, through torchvision itself

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def build_network(src: ImageNetSource) -> nn.Module:
    """The architecture with random weights (never ``pretrained=True``: that would download)."""
    from attnviz.core.recording.external import register_external_adapters

    register_external_adapters()  # here, not in provider(): listing the models must not import timm (~23 MB)
    if src.library == "torchvision":
        import torchvision

        return torchvision.models.get_model(src.arch, weights=None)
    import timm

    return timm.create_model(src.arch, pretrained=False)


def spec_for(src: ImageNetSource) -> ModelSpec:
    extra = {}
    size, resize = src.crop, src.resize
    if src.pinned:
        size, resize, mean, std, interpolation = src.pinned
        extra = {"mean": tuple(mean), "std": tuple(std), "interpolation": interpolation}
    return ModelSpec(
        name=src.name, display_name=src.display, attention=src.attention,
        builder=lambda: build_network(src),
        weights=WeightsSource(src.path, src.sha256, "cache", f"run `attnviz weights download {src.name}`"),
        class_names=imagenet_classes(), input_size=size, resize_size=resize,
        default_layer=src.layers[-1], layers=src.layers, source=src.library, **extra)


def provider() -> list[ModelSpec]:
    return [spec_for(s) for s in SOURCES]


# ---- download (an explicit step, never during a request) -------------------------------------------

def verify(path: Path, prefix: str = "", sha256: str = "") -> str:
    """The file's SHA-256, checked against a full pin (``sha256``) or the publisher's ``prefix``."""
    from attnviz.zoo.files import sha256_file

    digest = sha256_file(path)
    if sha256 and digest != sha256:
        raise AttnvizError(f"{path.name}: SHA-256 {digest[:16]}… does not match the pinned {sha256[:16]}…; "
                           "the file was not kept.")
    if prefix and not digest.startswith(prefix):
        raise AttnvizError(f"{path.name}: SHA-256 {digest[:16]}… does not start with the published {prefix}.")
    return digest


def _check_verifiable(src: ImageNetSource) -> None:
    if not (src.sha256 or src.sha256_prefix):
        raise AttnvizError(f"{src.name}: no SHA-256 is known for {src.url}, so attnviz will not download it "
                           "unverified. Fetch it yourself and load it as a checkpoint (--arch, --checkpoint).")


def download(src: ImageNetSource, progress: bool = True, opener: Callable = urllib.request.urlopen,
             url: str | None = None) -> Path:
    """Fetch ``src``'s weights into the cache and verify them; a file already there is only verified."""
    _check_verifiable(src)
    target = src.path
    if target.is_file():
        verify(target, src.sha256_prefix, src.sha256)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = opener(url or src.url, timeout=60)
            except (urllib.error.URLError, OSError) as exc:
                raise AttnvizError(f"Could not download {src.name} from {url or src.url}: {exc}. "
                                   "Check the network, or copy the file into "
                                   f"{target.parent} by hand.") from None
            with response:
                total = int(response.headers.get("Content-Length") or 0)
                from tqdm import tqdm

                with tqdm(total=total or None, unit="B", unit_scale=True, desc=src.name, disable=not progress,
                          file=sys.stderr) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        verify(tmp, src.sha256_prefix, src.sha256)
        shutil.move(str(tmp), target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def resolve_names(names: list[str], sets: list[str]) -> list[ImageNetSource]:
    chosen: list[ImageNetSource] = []
    for s in sets:
        if s != "imagenet":
            raise AttnvizError(f"Unknown weight set {s!r}; the only set is 'imagenet'.")
        chosen.extend(SOURCES)
    for n in names:
        if n == "imagenet":  # the set, given as a plain name (handy in Docker build arguments)
            chosen.extend(SOURCES)
            continue
        if n not in SOURCES_BY_NAME:
            raise AttnvizError(f"Unknown ImageNet model {n!r}; choose from: {', '.join(SOURCES_BY_NAME)}.")
        chosen.append(SOURCES_BY_NAME[n])
    if not chosen:
        raise AttnvizError("Name the models to download, or use --set imagenet.")
    return list(dict.fromkeys(chosen))


# ---- recording the gates of torchvision / timm attention modules ----------------------------------





