"""Safe image decoding: anything a user can upload -> an upright RGB uint8 array, or one clear error.

Uploads come from strangers on a shared server, so decoding checks sizes *before* it decodes pixels:
the byte size against :data:`MAX_UPLOAD_BYTES`, the header's declared width x height against
:data:`MAX_DECLARED_PIXELS` (decompression bombs), and large legal photos are reduced while decoding
(JPEG draft mode) and then downscaled to :data:`MAX_SIDE`. No global Pillow setting is changed.
"""
from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attnviz.errors import ImageDecodeError

MAX_UPLOAD_BYTES = 25 * 1024 * 1024     # larger files are refused before decoding
MAX_DECLARED_PIXELS = 80_000_000        # header-declared width x height above this is a bomb
MAX_SIDE = 4096                         # longer sides of legal images are downscaled to this
SUPPORTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"

ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, Image.Image, np.ndarray, io.IOBase]


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(("http://", "https://", "ftp://")):
            raise ImageDecodeError("URLs are not fetched; download the image first.")
        path = Path(text)
        if not path.is_file():
            raise ImageDecodeError(f"No such image file: {path.name or text}")
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise ImageDecodeError(f"The file is {_mb(size)}; the limit is {_mb(MAX_UPLOAD_BYTES)}.")
        data = path.read_bytes()
    elif hasattr(source, "read"):
        data = source.read(MAX_UPLOAD_BYTES + 1)
    else:
        raise ImageDecodeError(f"Cannot read an image from a {type(source).__name__}.")
    if len(data) == 0:
        raise ImageDecodeError("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageDecodeError(f"The file is larger than the {_mb(MAX_UPLOAD_BYTES)} limit.")
    return data


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Composite any transparency over white (what a viewer shows), returning RGB."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float data correctly."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
            arr = np.clip(arr / top * 255.0, 0, 255)
        else:
            top = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
            arr = np.clip(arr * (255.0 / top), 0, 255)
        im = Image.fromarray(np.round(arr).astype(np.uint8), "L")
    im = _flatten_alpha(im)
    if im.mode == "CMYK":
        im = im.convert("RGB")  # Pillow handles Adobe's inverted CMYK JPEGs when decoding
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def _downscale(im: Image.Image, max_side: int) -> Image.Image:
    longest = max(im.size)
    if longest <= max_side:
        return im
    scale = max_side / longest
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _bomb_message(exc: Exception) -> str:
    """Pillow refuses huge images while reading the header; report the declared size in megapixels."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f" {int(found.group(1)) / 1e6:.0f} megapixels" if found else " too many pixels"
    return f"The image declares{declared}; the limit is {MAX_DECLARED_PIXELS / 1e6:.0f} megapixels."


# What Pillow raises on a malformed file after it opened (TIFF directories: KeyError, TypeError, ...).
_PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, struct.error)


def _decode_pil(data: bytes, max_side: int) -> Image.Image:
    if _looks_like_svg(data):
        raise ImageDecodeError("SVG is not supported; export it as PNG or JPEG.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageDecodeError(f"This file is not a recognised image (supported: {SUPPORTED}).") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(_bomb_message(exc)) from None
        except _PIL_DECODE_ERRORS:
            raise ImageDecodeError("The image file is truncated or corrupt.") from None
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError("The image has no pixels.")
        if width * height > MAX_DECLARED_PIXELS:
            raise ImageDecodeError(f"The image declares {width}x{height} pixels "
                                   f"({width * height / 1e6:.1f} megapixels); the limit is "
                                   f"{MAX_DECLARED_PIXELS / 1e6:.0f} megapixels.")
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF / multi-page TIFF: the first frame
        except _PIL_DECODE_ERRORS:   # Pillow's frame walk raises what a malformed directory makes it raise
            raise ImageDecodeError("The image file is truncated or corrupt.") from None
        if im.format == "JPEG" and max(width, height) > 2 * max_side:
            im.draft("RGB", (max_side, max_side))  # decode at a reduced scale; saves memory and time
        try:
            im.load()
        except _PIL_DECODE_ERRORS as exc:
            message = str(exc).lower()
            if "truncat" in message or "broken" in message or "end of file" in message or "image file is" in message:
                raise ImageDecodeError("The image file is truncated or corrupt.") from None
            raise ImageDecodeError(f"The image could not be decoded ({exc}).") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("The image declares too many pixels to decode safely.") from None
        im = ImageOps.exif_transpose(im) or im
    return _downscale(_to_rgb(im), max_side)


def _from_array(arr: np.ndarray, max_side: int) -> np.ndarray:
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise ImageDecodeError(f"An image array must be (H, W) or (H, W, C) and non-empty, got shape {arr.shape}.")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"An image array needs 1, 3 or 4 channels, got {arr.shape[2]}.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageDecodeError("The image array contains NaN or infinite values.")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageDecodeError("A float image array must hold values in [0, 1].")
        arr = np.round(arr * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageDecodeError(f"Unsupported image array type {arr.dtype}; use uint8, uint16, bool or float.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.shape[0] * arr.shape[1] > MAX_DECLARED_PIXELS:
        raise ImageDecodeError("The image array has too many pixels.")
    mode = "L" if arr.ndim == 2 else ("RGBA" if arr.shape[2] == 4 else "RGB")
    im = Image.fromarray(np.ascontiguousarray(arr), mode)
    return np.ascontiguousarray(np.asarray(_downscale(_to_rgb(im), max_side)))


def decode_image(source: ImageSource, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """Any supported input -> (H, W, 3) uint8 RGB, upright, alpha over white. Raises ImageDecodeError."""
    if isinstance(source, np.ndarray):
        return _from_array(source, max_side)
    if isinstance(source, Image.Image):
        w, h = source.size
        if w * h > MAX_DECLARED_PIXELS:
            raise ImageDecodeError(f"The image has {w}x{h} pixels; the limit is {MAX_DECLARED_PIXELS / 1e6:.0f} megapixels.")
        im = ImageOps.exif_transpose(source) or source
        return np.ascontiguousarray(np.asarray(_downscale(_to_rgb(im), max_side)))
    im = _decode_pil(_read_bytes(source), max_side)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


SMALL_SIDE = 32   # below this many pixels a side, the models see mostly their own upscaling


def image_notes(source: ImageSource, image: np.ndarray) -> list[str]:
    """What the user should know about how an accepted image was read: only the first frame of an animated or
    multi-page file was used; a tiny image was enlarged to the models' input size."""
    notes = []
    if not isinstance(source, (np.ndarray, Image.Image)):
        try:
            with Image.open(io.BytesIO(_read_bytes(source))) as im:
                frames = getattr(im, "n_frames", 1)
        except Exception:  # noqa: BLE001 - it decoded once already; a note is not worth a second error
            frames = 1
        if frames > 1:
            notes.append(f"The file has {frames} frames (animated or multi-page); only the first was explained.")
    h, w = image.shape[:2]
    if min(h, w) < SMALL_SIDE:
        notes.append(f"The image is only {w}x{h} pixels; the models see it enlarged to their input size, so the "
                     "maps say little about its detail.")
    return notes


def load_mask(source: ImageSource) -> np.ndarray:
    """A mask image (any mode) -> bool (H, W): True where the pixel is non-zero (alpha ignored)."""
    if isinstance(source, np.ndarray):
        arr = source
    else:
        data = _read_bytes(source) if not isinstance(source, Image.Image) else None
        im = source if data is None else Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_DECLARED_PIXELS:
            raise ImageDecodeError("The mask declares too many pixels.")
        arr = np.asarray(im.convert("L"))
    return (arr.reshape(arr.shape[0], arr.shape[1], -1) > 0).any(axis=2)

