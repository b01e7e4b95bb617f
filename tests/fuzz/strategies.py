"""Hypothesis strategies for the parsers that take a stranger's bytes: images, checkpoints, VOC XML, models files,
data-set archives.

Each strategy mixes three kinds of input: raw bytes; valid files of the format, generated; and those valid files
mutated (bytes flipped, cut short, spliced, header fields set to huge values), which is where parsers break.
"""
from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zipfile
from xml.sax.saxutils import escape

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

from attnviz.data.datasets import VocBox, voc_xml

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA")
IMAGE_MODES = ("RGB", "L", "RGBA", "P", "1", "I;16", "I", "F", "CMYK", "LA")
HUGE = (0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, 10**9)


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` with up to four edits: flip/overwrite a byte, cut it short, insert junk, write a huge int."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(("flip", "cut", "insert", "huge", "zero")))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "huge":
            data[at:at + 4] = struct.pack(draw(st.sampled_from(("<I", ">I"))), draw(st.sampled_from(HUGE)))
        else:
            data[at:at + 8] = bytes(8)
    return bytes(data)


@st.composite
def valid_image(draw) -> bytes:
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    mode = draw(st.sampled_from(IMAGE_MODES))
    try:
        image = image.convert(mode)
    except ValueError:
        pass
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=draw(st.sampled_from(IMAGE_FORMATS)))
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), valid_image(), valid_image().flatmap(mutated))


def _small_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "fc.weight": torch.randn(10, 4, generator=g),
            "fc.bias": torch.zeros(10), "bn.num_batches_tracked": torch.tensor(3)}


def _torch_bytes(obj, legacy: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def safetensors_bytes(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


@st.composite
def valid_checkpoint(draw) -> bytes:
    state = _small_state(draw(st.integers(0, 1000)))
    kind = draw(st.sampled_from(("zip", "legacy", "wrapped", "safetensors")))
    if kind == "safetensors":
        from safetensors.torch import save

        return save(state)
    if kind == "wrapped":
        return _torch_bytes({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, legacy=False)
    return _torch_bytes(state, legacy=kind == "legacy")


@st.composite
def crafted_safetensors(draw) -> bytes:
    """A header of random tensors (dtypes, shapes up to absurd sizes, offsets that may not fit the data)."""
    header: dict = {}
    for i in range(draw(st.integers(0, 3))):
        shape = draw(st.lists(st.sampled_from((0, 1, 3, 2**20, 2**31, 2**40)), max_size=4))
        start = draw(st.sampled_from((0, 4, 2**20, 2**62)))
        header[f"t{i}"] = {"dtype": draw(st.sampled_from(("F32", "F16", "I64", "BOOL", "U8", "F64", "X9"))),
                           "shape": shape, "data_offsets": [start, start + draw(st.sampled_from((0, 4, 16, 2**40)))]}
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    return safetensors_bytes(header, draw(st.binary(max_size=64)))


plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4),
                            st.tuples(inner, inner)),
    max_leaves=12)


def checkpoint_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), valid_checkpoint(), valid_checkpoint().flatmap(mutated),
                     crafted_safetensors(), plain_values.map(lambda v: pickle.dumps(v, protocol=2)),
                     plain_values.map(lambda v: _torch_bytes(v, legacy=False)))


VOC_NUMBERS = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats().map(repr),
                        st.sampled_from(("1e999", "-1e999", "nan", "inf", "", " 12 ", "0x10", "１２", "1_000", "-0")),
                        st.text(max_size=6))


@st.composite
def voc_document(draw) -> bytes:
    """A VOC-like document: each part present or not, every number any text."""
    def num(tag: str) -> str:
        return f"<{tag}>{escape(draw(VOC_NUMBERS))}</{tag}>" if draw(st.booleans()) or tag.startswith("x") else ""

    parts = ["<annotation>", f"<filename>{escape(draw(st.text(max_size=10)))}</filename>"]
    if draw(st.booleans()):
        parts.append("<size>" + num("width") + num("height") + num("depth") + "</size>")
    for _ in range(draw(st.integers(0, 4))):
        box = "<bndbox>" + "".join(num(t) for t in ("xmin", "ymin", "xmax", "ymax")) + "</bndbox>"
        parts.append(f"<object><name>{escape(draw(st.text(max_size=8)))}</name>{box if draw(st.booleans()) else ''}"
                     "</object>")
    parts.append("</annotation>")
    text = "".join(parts)
    if draw(st.booleans()):
        text = '<?xml version="1.0" encoding="utf-8"?>\n' + text
    return text.encode("utf-8")


@st.composite
def valid_voc(draw) -> bytes:
    w, h = draw(st.integers(1, 2000)), draw(st.integers(1, 2000))
    boxes = [VocBox(draw(st.text(max_size=6)), x0, y0, x0 + draw(st.integers(0, 50)), y0 + draw(st.integers(0, 50)))
             for x0, y0 in draw(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), max_size=3))]
    return voc_xml("a.png", w, h, boxes)


def voc_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), voc_document(), valid_voc().flatmap(mutated),
                     voc_document().flatmap(mutated))


def _toml_string(text: str) -> str:
    return json.dumps(text)   # a JSON string literal is a valid TOML basic string for these characters


TOML_VALUES = st.one_of(
    st.text(max_size=12).map(_toml_string),
    st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(("true", "false", "nan", "inf", "-inf", "[]", "[0.5, 0.5, 0.5]", "[1, 2]", "[0, 0, 0]",
                     "[true, 1, 2]", "{}", '{a = 1}', "1979-05-27", '"imagenet"', '"bicubic"', '"layer4"')))
FIELDS = ("name", "arch", "checkpoint", "classes", "layer", "input_size", "resize_size", "mean", "std",
          "interpolation", "display_name", "nmae", "weights")
GOOD_VALUES = {"name": ('"mine"', '"a.b"', '"two words"', '"baseline"'),
               "arch": ('"baseline"', '"se"', '"nope"', '"timm:no_such_net"', '"python:fuzz_absent_mod:f"',
                        '"python:"', '"timm:"'),
               "checkpoint": ('"good.safetensors"', '"garbage.pth"', '"absent.pt"', '"."', '"/"', '"classes.txt"'),
               "classes": ('"classes.txt"', '"imagenet"', '"garbage.pth"', '"absent.txt"', '"classes.json"')}


@st.composite
def models_toml(draw) -> str:
    lines: list[str] = []
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"other = {draw(TOML_VALUES)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(st.sampled_from(("[[model]]", "[[model]]", "[[model]]", "[model]", "[[models]]"))))
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique=True)):
            value = draw(st.one_of(st.sampled_from(GOOD_VALUES[field]), TOML_VALUES)
                         if field in GOOD_VALUES else TOML_VALUES)
            lines.append(f"{field} = {value}")
    return "\n".join(lines) + "\n"


def models_file_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), models_toml().map(str.encode),
                     models_toml().map(str.encode).flatmap(mutated))


# A data-set archive's member names: the exported layout, and the names an attacker writes.
MEMBER_NAMES = ("circle/a.png", "circle/a_mask.png", "square/b.jpg", "square/b.xml", "wrap/circle/c.png",
                "../up.png", "/abs.png", "a/../../b.png", "C:/win.png", "c\\back.png", "circle/inner.zip",
                "circle/", "x" * 300 + ".png", "circle/a.png")


@st.composite
def archive_bytes_valid(draw) -> bytes:
    """A zip of up to six members (images, masks, XML, junk) under the names above or random ones."""
    buffer = io.BytesIO()
    method = draw(st.sampled_from((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)))
    with zipfile.ZipFile(buffer, "w", method) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # a duplicate member name is one of the attacks
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.sampled_from(MEMBER_NAMES) | st.text(min_size=1, max_size=20))
            payload = draw(st.one_of(valid_image(), valid_voc(), st.binary(max_size=64)))
            try:
                zf.writestr(name, payload)
            except (ValueError, UnicodeEncodeError, IndexError):   # zipfile cannot write some names (e.g. "\x00")
                pass
    return buffer.getvalue()


def archive_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), archive_bytes_valid(), archive_bytes_valid().flatmap(mutated))
