"""A user's own images with ground truth: the torchvision ImageFolder layout plus masks or VOC boxes.

Layout (what ``attnviz synth export`` writes, and what ImageNet's validation set becomes once sorted
into class folders)::

    DIR/<class>/<stem>.<png|jpg|...>     an image; <class> names the true class
    DIR/<class>/<stem>_mask.png          optional binary mask of the object (non-zero = object)
    DIR/<class>/<stem>.xml               or optional Pascal VOC boxes (several boxes = their union)

Class folders are matched to a model's labels by name, ignoring case and ``_``/``-``/space differences
(as ``engine.resolve_target`` does). For a 1000-class model, which attnviz takes to be in the standard
ImageNet-1k order (torchvision's and timm's), a folder may also be a WordNet id such as ``n01440764``,
looked up in the synset list that timm ships inside its wheel (offline).

Listing never aborts and never drops a file silently: unsupported files, masks or XML files without an
image, and class folders no label matches are all reported with a reason. Images and masks are read
lazily, per item, so one bad file is one readable :class:`~attnviz.errors.DatasetError` and the rest of
the set still runs. Images are decoded only by :func:`attnviz.data.images.decode_image` (size and pixel caps).
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from attnviz.data.images import decode_image, load_mask
from attnviz.errors import DatasetError, ImageDecodeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIX = "_mask.png"
MAX_XML_BYTES = 1024 * 1024      # an ImageNet validation annotation is under 2 kB; anything huge is refused unread
IMAGENET_CLASSES = 1000
_WNID = re.compile(r"^n\d{8}$")
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


# ---- label matching ---------------------------------------------------------------------------

def normalise_name(name: str) -> str:
    """Lower case, ``_``/``-`` as spaces, runs of white space collapsed: "Great_White-shark" -> "great white shark"."""
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order, from timm's packaged ``imagenet_synsets.txt``.

    The file is located without importing timm (which would import every model definition).
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("WordNet-id class folders need timm's ImageNet metadata; install timm.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info" / "imagenet_synsets.txt"
    ids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(ids) != IMAGENET_CLASSES:
        raise DatasetError(f"{path} lists {len(ids)} synsets, not {IMAGENET_CLASSES}.")
    return ids


def match_class(folder: str, class_names: Sequence[str] | None) -> tuple[int | None, str]:
    """``(label index, "")`` for a class folder name, or ``(None, why not)``."""
    if not class_names:
        return None, "no class names to match the folder against"
    wanted = normalise_name(folder)
    hits = [i for i, name in enumerate(class_names) if normalise_name(name) == wanted]
    if len(hits) == 1:
        return hits[0], ""
    if len(hits) > 1:
        listed = ", ".join(f"{i} ({class_names[i]!r})" for i in hits)
        hint = "; name the folder by its WordNet id instead" if len(class_names) == IMAGENET_CLASSES else ""
        return None, f"folder {folder!r} matches several classes: {listed}{hint}"
    if _WNID.match(folder.strip().lower()):
        if len(class_names) != IMAGENET_CLASSES:
            return None, (f"folder {folder!r} is a WordNet id, but the model has {len(class_names)} classes, "
                          f"not ImageNet's {IMAGENET_CLASSES}")
        index = {wnid: i for i, wnid in enumerate(imagenet_synsets())}.get(folder.strip().lower())
        if index is None:
            return None, f"WordNet id {folder!r} is not one of the {IMAGENET_CLASSES} ImageNet-1k classes"
        return index, ""
    close = difflib.get_close_matches(wanted, [normalise_name(c) for c in class_names], n=3)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    return None, f"no class named {folder!r} among the model's {len(class_names)} classes{hint}"


# ---- Pascal VOC boxes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VocBox:
    """One object box in pixel edges: columns ``x0 <= x < x1``, rows ``y0 <= y < y1`` (0-based)."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class VocAnnotation:
    """The boxes of one VOC XML file and the image size it declares (0 where it declares none)."""

    width: int
    height: int
    boxes: tuple[VocBox, ...]


def _coordinate(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def voc_xml(filename: str, width: int, height: int, boxes: Sequence[VocBox], folder: str = "") -> bytes:
    """A Pascal VOC annotation. VOC counts pixels from 1 with inclusive corners, so a box covering
    0-based columns ``x0 .. x1 - 1`` is written ``xmin = x0 + 1``, ``xmax = x1``; :func:`parse_voc` inverts it."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", box.x0 + 1), ("ymin", box.y0 + 1), ("xmax", box.x1), ("ymax", box.y1)):
            ET.SubElement(bnd, tag).text = _coordinate(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _number(obj: ET.Element, tag: str, where: str) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    if text is None:
        raise DatasetError(f"{where}: <bndbox> has no <{tag}>.")
    try:
        value = float(text.strip())
    except ValueError:
        raise DatasetError(f"{where}: <{tag}> is {text.strip()[:20]!r}, not a number.") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: <{tag}> is not a finite number.")
    return value


def parse_voc(source: str | os.PathLike | bytes, name: str = "") -> VocAnnotation:
    """Read a VOC annotation safely: at most :data:`MAX_XML_BYTES`, UTF-8, no DTD and no entities.

    Refusing any ``<!DOCTYPE``/``<!ENTITY`` rules out entity expansion ("billion laughs") and external
    entities whatever the XML parser would do with them; VOC files never need either.
    """
    if isinstance(source, bytes):
        data, label = source, name or "XML"
    else:
        path = Path(source)
        label = name or path.name
        try:
            size = path.stat().st_size
            if size > MAX_XML_BYTES:
                raise DatasetError(f"{label}: {size:,} bytes; VOC files over {MAX_XML_BYTES:,} bytes are refused.")
            with open(path, "rb") as f:
                data = f.read(MAX_XML_BYTES + 1)
        except OSError as exc:
            raise DatasetError(f"{label}: cannot be read ({exc.strerror or exc}).") from None
    if len(data) > MAX_XML_BYTES:
        raise DatasetError(f"{label}: VOC files over {MAX_XML_BYTES:,} bytes are refused.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{label}: not UTF-8 text; a VOC annotation is plain XML.") from None
    if _DTD.search(data):
        raise DatasetError(f"{label}: XML with a DTD or entity declarations is refused.")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DatasetError(f"{label}: not well-formed XML ({exc}).") from None
    except LookupError as exc:   # an encoding declaration naming no known codec
        raise DatasetError(f"{label}: {exc}; a VOC annotation is UTF-8 XML.") from None
    if root.tag != "annotation":
        raise DatasetError(f"{label}: the root element is <{root.tag}>, not a VOC <annotation>.")
    width = height = 0
    if root.find("size") is not None:
        try:
            width = int(float(root.findtext("size/width", "0")))
            height = int(float(root.findtext("size/height", "0")))
        except (ValueError, OverflowError):   # OverflowError: "1e999" is a float, infinity, and no int
            raise DatasetError(f"{label}: <size> holds something other than finite numbers.") from None
    boxes = []
    for k, obj in enumerate(root.iter("object"), start=1):
        if obj.find("bndbox") is None:
            continue  # VOC allows objects without a box (e.g. parts-only annotations)
        where = f"{label}, object {k}"
        xmin, ymin = _number(obj, "xmin", where), _number(obj, "ymin", where)
        xmax, ymax = _number(obj, "xmax", where), _number(obj, "ymax", where)
        if xmax < xmin or ymax < ymin:
            raise DatasetError(f"{where}: the box ends before it starts ({xmin:g},{ymin:g} to {xmax:g},{ymax:g}).")
        boxes.append(VocBox((obj.findtext("name") or "").strip(), xmin - 1, ymin - 1, xmax, ymax))
    return VocAnnotation(max(0, width), max(0, height), tuple(boxes))


def _same_aspect(src_w: float, src_h: float, w: int, h: int) -> bool:
    """Could a ``src_w`` x ``src_h`` picture have been scaled to ``w`` x ``h`` (rounding to whole pixels)?"""
    return (abs(src_h * w / src_w - h) <= 1 or abs(src_w * h / src_h - w) <= 1
            or abs(src_w / src_h - w / h) <= 0.02 * (w / h))


def boxes_mask(annotation: VocAnnotation, shape: tuple[int, int], name: str = "XML") -> np.ndarray:
    """The union of the boxes as a bool mask of ``shape`` (the decoded image's size).

    Boxes are scaled from the size the XML declares to ``shape`` (e.g. after attnviz downscaled a huge
    photo); a declared size whose aspect ratio differs from the image's is an error, not a guess.
    """
    h, w = shape
    ann_w, ann_h = annotation.width or w, annotation.height or h
    if not _same_aspect(ann_w, ann_h, w, h):
        raise DatasetError(f"{name}: the XML declares a {ann_w}x{ann_h} image, but the image is {w}x{h}.")
    sx, sy = w / ann_w, h / ann_h
    mask = np.zeros((h, w), bool)
    for b in annotation.boxes:
        x0, x1 = max(0, int(round(b.x0 * sx))), min(w, int(round(b.x1 * sx)))
        y0, y1 = max(0, int(round(b.y0 * sy))), min(h, int(round(b.y1 * sy)))
        mask[y0:y1, x0:x1] = True
    return mask


# ---- the listing ----------------------------------------------------------------------------------

def _read_mask_file(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        mask = load_mask(path)
    except ImageDecodeError as exc:
        raise DatasetError(f"{path.name}: {exc}") from None
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        raise DatasetError(f"{path.name}: not a readable PNG mask.") from None
    h, w = shape
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask
    if not _same_aspect(mw, mh, w, h):
        raise DatasetError(f"{path.name}: the mask is {mw}x{mh}, but the image is {w}x{h}.")
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


@dataclass(frozen=True)
class DatasetItem:
    """One image of the set: where it is, its class, and its ground truth (read on demand)."""

    path: Path
    class_folder: str
    label: int | None                # index into the model's class names; None when the folder did not match
    label_reason: str                # why ``label`` is None ("" when it is set)
    truth: str | None                # "mask", "boxes" or None
    truth_path: Path | None

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB through the safe decoder; a bad file raises DatasetError naming it."""
        try:
            return decode_image(self.path)
        except ImageDecodeError as exc:
            raise DatasetError(f"{self.path.name}: {exc}") from None

    def load_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The ground truth as a bool (H, W) mask at ``shape`` (the decoded image's own size); None without any."""
        if self.truth == "mask":
            return _read_mask_file(self.truth_path, shape)
        if self.truth == "boxes":
            annotation = parse_voc(self.truth_path)
            if not annotation.boxes:
                raise DatasetError(f"{self.truth_path.name}: no <object> with a <bndbox>.")
            return boxes_mask(annotation, shape, self.truth_path.name)
        return None

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The image and its mask at the image's size."""
        image = self.load_image()
        return image, self.load_mask(image.shape[:2])


@dataclass(frozen=True)
class Skipped:
    """A file or folder that is not used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ClassFolder:
    name: str
    label: int | None
    reason: str                      # why ``label`` is None ("" when it is set)
    images: int


@dataclass(frozen=True)
class Dataset:
    root: Path
    items: tuple[DatasetItem, ...]
    skipped: tuple[Skipped, ...]
    folders: tuple[ClassFolder, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def unmatched(self) -> tuple[ClassFolder, ...]:
        return tuple(f for f in self.folders if f.label is None)


def _files_under(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """Every file below ``folder`` (sub-folders too, as ImageFolder does), sorted, and the folders that could
    not be read; symlinked folders are not followed."""
    found: list[Path] = []
    unreadable: list[Skipped] = []

    def report(exc: OSError) -> None:
        unreadable.append(Skipped(Path(exc.filename or folder), f"cannot be read ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=report):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames))
    return found, unreadable


def _list_folder(folder: Path, label: int | None, reason: str) -> tuple[list[DatasetItem], list[Skipped]]:
    files, unreadable = _files_under(folder)
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.lower().endswith(MASK_SUFFIX)]
    image_stems = {(f.parent, f.stem) for f in images}
    # a "<stem>_mask.png" is a mask when an image "<stem>.*" sits beside it; alone it is an orphan
    masks = {}
    for f in files:
        if f.name.lower().endswith(MASK_SUFFIX):
            masks[(f.parent, f.name[:-len(MASK_SUFFIX)])] = f
    xmls = {(f.parent, f.stem): f for f in files if f.suffix.lower() == ".xml"}
    items: list[DatasetItem] = []
    skipped: list[Skipped] = list(unreadable)
    for key, f in masks.items():
        if key not in image_stems:
            skipped.append(Skipped(f, f"a mask with no image {key[1]}.* beside it"))
    for key, f in xmls.items():
        if key not in image_stems:
            skipped.append(Skipped(f, f"a VOC file with no image {key[1]}.* beside it"))
        elif key in masks:
            skipped.append(Skipped(f, f"not used: {masks[key].name} is this image's ground truth"))
    used = set(images) | set(masks.values()) | set(xmls.values())
    for f in files:
        if f not in used:
            kind = f.suffix.lower() or "no extension"
            skipped.append(Skipped(f, f"unsupported file type ({kind}); images must be "
                                      f"{', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}"))
    for f in images:
        key = (f.parent, f.stem)
        truth, truth_path = (("mask", masks[key]) if key in masks else ("boxes", xmls[key]) if key in xmls
                             else (None, None))
        items.append(DatasetItem(f, folder.name, label, reason, truth, truth_path))
    return items, skipped


def read_dataset(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> Dataset:
    """List ``root`` in the ImageFolder layout, matching class folders to ``class_names``.

    Raises :class:`DatasetError` only when ``root`` itself is unusable; everything inside is listed, with
    reasons for what cannot be used.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; --data wants DIR/<class>/<image> files.")
    items: list[DatasetItem] = []
    skipped: list[Skipped] = []
    folders: list[ClassFolder] = []
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DatasetError(f"{root} cannot be read ({exc.strerror or exc}).") from None
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            label, reason = match_class(entry.name, class_names)
            found, left = _list_folder(entry, label, reason)
            items += found
            skipped += left
            folders.append(ClassFolder(entry.name, label, reason, len(found)))
        elif entry.is_dir():
            skipped.append(Skipped(entry, "a symbolic link to a folder (not followed)"))
        else:
            skipped.append(Skipped(entry, "not inside a class folder (the layout is DIR/<class>/<image>)"))
    if not folders:
        raise DatasetError(f"{root} has no class folders; the layout is DIR/<class>/<image>.")
    return Dataset(root, tuple(items), tuple(skipped), tuple(folders))
