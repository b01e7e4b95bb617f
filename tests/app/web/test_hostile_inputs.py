"""Hostile and odd inputs through the code paths the page, the API and the CLI all use.

* images: each case asserts the decoded image's size and pixel values, or the error and its message;
* checkpoints: code-running pickles, TorchScript, wrong formats, absurd shapes, NaN weights — refused,
  never executed;
* limits: models per request, slow methods, request time, upload size (enforced by the server).

Every input is built here; nothing is committed. The server keeps serving after bad uploads
(tests/app/web/test_web.py), 8 concurrent API clients get the serial results (tests/app/web/test_web.py), and the app
runs with the network blocked (tests/system/test_offline.py).
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from attnviz.app import cli, pipeline
from attnviz.core import slow
from attnviz.data import images
from attnviz.data.images import decode_image, load_mask
from attnviz.errors import CheckpointError, ImageDecodeError, LimitExceededError
from attnviz.zoo import files as ckpt_files

SCENE = sorted(p for p in (Path(__file__).resolve().parents[3] / "attnviz" / "assets" / "examples").glob("*.png")
               if not p.name.endswith("_mask.png"))[0]


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _close(pixel, expected, tol=3) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# ---- refused inputs: one clear message each ------------------------------------------------------

def test_zero_bytes():
    with pytest.raises(ImageDecodeError, match="The file is empty"):
        decode_image(b"")


def test_text_renamed_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my notes, not a photo\n" * 10)
    with pytest.raises(ImageDecodeError, match="not a recognised image .*PNG, JPEG"):
        decode_image(path)


def test_truncated_jpeg():
    data = _jpeg_bytes(Image.new("RGB", (64, 64), (200, 30, 30)))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_truncated_png():
    rng = np.random.default_rng(0)
    data = _png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_svg_is_refused_with_advice(tmp_path):
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    with pytest.raises(ImageDecodeError, match="SVG is not supported; export it as PNG or JPEG"):
        decode_image(svg)
    (tmp_path / "a.svg").write_bytes(b"<svg width='4' height='4'></svg>")
    with pytest.raises(ImageDecodeError, match="SVG is not supported"):
        decode_image(tmp_path / "a.svg")


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a tiny (incomplete) data stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    data = _bomb_png(100_000, 100_000)
    assert len(data) < 200  # a tiny file ...
    with pytest.raises(ImageDecodeError, match="declares 10000 megapixels; the limit is 80 megapixels"):
        decode_image(data)  # ... is refused from its header, without allocating 30 GB


def test_just_over_the_pixel_limit_is_refused():
    side = int(np.sqrt(images.MAX_DECLARED_PIXELS)) + 1
    with pytest.raises(ImageDecodeError, match="megapixels"):
        decode_image(_bomb_png(side, side))


def test_oversized_file_is_refused_with_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", 1000)
    data = _png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    assert len(data) > 1000
    with pytest.raises(ImageDecodeError, match="larger than the 0 MB limit|limit"):
        decode_image(data)
    (tmp_path / "big.png").write_bytes(data)
    with pytest.raises(ImageDecodeError, match="the limit is"):
        decode_image(tmp_path / "big.png")


def test_url_string_is_not_fetched():
    with pytest.raises(ImageDecodeError, match="URLs are not fetched"):
        decode_image("https://example.com/cat.jpg")


def test_missing_path():
    with pytest.raises(ImageDecodeError, match="No such image file"):
        decode_image("/nonexistent/dir/cat.png")


@pytest.mark.parametrize("arr,phrase", [
    (np.zeros((0, 5, 3), np.uint8), "non-empty"),
    (np.zeros((4, 4, 2), np.uint8), "1, 3 or 4 channels"),
    (np.zeros((2, 2, 2, 3), np.uint8), "non-empty|must be"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.full((4, 4), 2.0, np.float32), r"\[0, 1\]"),
    (np.zeros((4, 4), np.int64), "Unsupported image array type"),
])
def test_bad_arrays(arr, phrase):
    with pytest.raises(ImageDecodeError, match=phrase):
        decode_image(arr)


# ---- odd but legal inputs: exact pixels ---------------------------------------------------------

def test_one_by_one():
    out = decode_image(_png_bytes(Image.new("RGB", (1, 1), (10, 20, 30))))
    assert out.shape == (1, 1, 3) and out.dtype == np.uint8 and tuple(out[0, 0]) == (10, 20, 30)


def test_very_thin_image():
    out = decode_image(_png_bytes(Image.new("RGB", (5000, 1), (0, 128, 255))))
    assert out.shape == (1, 4096, 3)  # longest side capped, aspect kept (1 px stays 1 px)
    assert tuple(out[0, 100]) == (0, 128, 255)


def test_sixteen_bit_png_scales_to_eight_bit():
    arr = np.array([[65535, 32896, 0, 257]], dtype=np.uint16)
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    out = decode_image(_png_bytes(im))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [255, 128, 0, 1]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg_comes_out_red():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_jpeg_bytes(cmyk))
    assert out.shape == (16, 16, 3)
    assert _close(out[8, 8], (255, 0, 0), tol=8)


def test_palette_with_transparency_is_composited_over_white():
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1  # palette entry 1 (blue) is fully transparent
    out = decode_image(_png_bytes(im, transparency=1))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)


def test_rgba_alpha_is_composited_over_white():
    arr = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = decode_image(_png_bytes(Image.fromarray(arr, "RGBA")))
    assert tuple(out[0, 0]) == (255, 255, 255)   # transparent red -> white
    assert tuple(out[0, 1]) == (0, 0, 255)       # opaque blue stays blue
    assert _close(out[0, 2], (127, 127, 127), tol=1)  # half-transparent black -> mid grey


def test_grayscale():
    out = decode_image(_png_bytes(Image.new("L", (3, 2), 77)))
    assert out.shape == (2, 3, 3) and (out == 77).all()


def test_la_is_composited_over_white():
    im = Image.new("LA", (2, 1))
    im.putpixel((0, 0), (0, 255))
    im.putpixel((1, 0), (0, 0))
    out = decode_image(_png_bytes(im))
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, 1]) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(buf.getvalue())
    assert out.shape == (8, 8, 3) and _close(out[4, 4], (255, 0, 0))


def test_multipage_tiff_gives_first_page():
    pages = [Image.new("RGB", (6, 4), c) for c in ((0, 200, 0), (200, 0, 0))]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    out = decode_image(buf.getvalue())
    assert out.shape == (4, 6, 3) and tuple(out[2, 2]) == (0, 200, 0)


def test_exif_rotated_jpeg_comes_out_upright():
    # Stored 2 wide x 1 high: red on the left, blue on the right. Orientation 6 = "rotate 90 CW to view".
    stored = Image.new("RGB", (32, 16))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    stored.paste((0, 0, 255), (16, 0, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(_jpeg_bytes(stored, exif=exif))
    assert out.shape == (32, 16, 3)          # now 16 wide x 32 high
    assert _close(out[4, 8], (255, 0, 0), 10)   # the left (red) half is on top after a clockwise turn
    assert _close(out[28, 8], (0, 0, 255), 10)


def test_huge_but_legal_photo_is_downscaled_not_rejected():
    photo = Image.new("RGB", (6000, 4000), (30, 160, 90))
    out = decode_image(_jpeg_bytes(photo))
    assert out.shape == (2731, 4096, 3)  # longest side 4096, aspect 3:2 kept
    assert _close(out[1000, 1000], (30, 160, 90), 4)


@pytest.mark.parametrize("arr,expected", [
    (np.full((2, 2), 200, np.uint8), (200, 200, 200)),
    (np.full((2, 2, 1), 9, np.uint8), (9, 9, 9)),
    (np.full((2, 2), 65535, np.uint16), (255, 255, 255)),
    (np.ones((2, 2), bool), (255, 255, 255)),
    (np.full((2, 2, 3), 0.5, np.float32), (128, 128, 128)),
    (np.concatenate([np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2, 1), np.uint8)], axis=2), (255, 255, 255)),
])
def test_array_inputs(arr, expected):
    out = decode_image(arr)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8 and tuple(out[0, 0]) == expected


def test_pil_and_file_object_inputs():
    im = Image.new("RGB", (3, 3), (1, 2, 3))
    assert tuple(decode_image(im)[1, 1]) == (1, 2, 3)
    assert tuple(decode_image(io.BytesIO(_png_bytes(im)))[1, 1]) == (1, 2, 3)


def test_mask_loading_any_mode():
    arr = np.zeros((3, 4), np.uint8)
    arr[1, 2] = 255
    mask = load_mask(_png_bytes(Image.fromarray(arr)))
    assert mask.dtype == bool and mask.shape == (3, 4) and mask.sum() == 1 and mask[1, 2]


# ---- hostile checkpoints ---------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create a marker file — a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pth_whose_unpickling_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "payload": _Payload(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="Refused: the file contains Python objects"):
        ckpt_files.read_checkpoint(evil)
    code = cli.main(["explain", str(SCENE), "--arch", "resnet18", "--checkpoint", str(evil), "--out",
                     str(tmp_path / "o"), "--quiet"])
    assert code == 2
    from attnviz.app.web import handlers

    _, status, _ = handlers.on_load_checkpoint(str(evil), "resnet18", None, [])
    assert "Refused" in status
    assert not marker.exists()


def test_torchscript_archive_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archives are not accepted"):
        ckpt_files.read_checkpoint(path)


@pytest.mark.parametrize("filename,data,phrase", [
    ("notes.pth", b"definitely not a checkpoint", "not a PyTorch or safetensors checkpoint"),
    ("weights.safetensors", b"\x00" * 64, "not a PyTorch or safetensors checkpoint"),
    ("model.onnx", b"onnx", "not a PyTorch or safetensors checkpoint by its name: unsupported checkpoint type .onnx"),
    ("empty.pth", b"", "empty.pth is empty: not a PyTorch or safetensors checkpoint"),
])
def test_wrong_formats_are_refused(tmp_path, filename, data, phrase):
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=phrase):
        ckpt_files.read_checkpoint(path)


def test_nan_weights_and_absurd_shapes_are_refused(tmp_path, monkeypatch):
    state = {"fc.weight": torch.tensor([[1.0, float("nan")]]), "fc.bias": torch.zeros(1)}
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="'fc.weight' contains 1 NaN or infinite values"):
        ckpt_files.read_checkpoint(tmp_path / "nan.safetensors")
    monkeypatch.setattr(ckpt_files, "MAX_TENSOR_ELEMENTS", 100)
    save_file({"big": torch.zeros(11, 11)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(CheckpointError, match="'big' has 121 elements"):
        ckpt_files.read_checkpoint(tmp_path / "big.safetensors")




# ---- limits ---------------------------------------------------------------------------------------

def test_cap_on_models_per_request():
    limit = pipeline.MAX_MODELS_PER_REQUEST
    if "ATTNVIZ_MAX_MODELS" not in __import__("os").environ:
        assert limit == 16  # the default, set from benchmarks/compare_all.py (BENCHMARKS.md)
    with pytest.raises(LimitExceededError, match=rf"{limit + 1} models were selected; the limit is {limit} per request"):
        pipeline.run(pipeline.Request(image=SCENE, models=["baseline"] * (limit + 1)))


def test_slow_methods_are_limited_to_a_few_models():
    with pytest.raises(LimitExceededError, match="scorecam run hundreds of forward passes per model; choose at most 2"):
        pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "se", "cbam"], methods=["scorecam"]))


def test_slow_method_time_budget(monkeypatch):
    monkeypatch.setattr(slow, "SLOW_BUDGET_S", 0.001)
    with pytest.raises(LimitExceededError, match=r"scorecam on baseline needs about 128 forward passes .* the limit is 0 s"):
        pipeline.run(pipeline.Request(image=SCENE, models=["baseline"], methods=["scorecam"]))


def test_request_timeout_stops_between_models(monkeypatch):
    monkeypatch.setattr(pipeline, "REQUEST_TIMEOUT_S", 1e-9)
    with pytest.raises(LimitExceededError, match=r"took longer than 0 s and was stopped after 0 of 2 models"):
        pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "se"]))


def test_server_enforces_the_upload_size_limit_and_keeps_serving(tmp_path, monkeypatch):
    from gradio_client import Client, handle_file
    from webapp import running_app

    monkeypatch.setenv("ATTNVIZ_MAX_UPLOAD_MB", "1")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (2 * 1024 * 1024))
    with running_app() as url:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="(?i)file size|too large|exceeds|413"):
            client.predict(handle_file(str(big)), "baseline", api_name="/compare")
        _, _, report = client.predict(handle_file(str(SCENE)), "baseline", api_name="/compare")
        assert report["models"][0]["model"] == "baseline"
