"""`attnviz explain DIR` batched: the one-image path's numbers, bad files skipped and listed, the issue-16 options in
the report, devices on the command line and the server, and a 2-rank torchrun run writing the one-process folder."""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, assert_json_close
from webapp import free_port

from attnviz.api import compare
from attnviz.app import cli, pipeline
from attnviz.app.batch import explain_paths, mask_beside
from attnviz.core.methods import names as method_names
from attnviz.data import synth

MODELS = ["baseline", "cbam"]
METHODS = ["gradcam", "layercam"]
TOL = 1e-6 + 1e-12   # CSV probabilities are rounded to 6 decimals: a last-digit flip is 1e-6


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height with a tiny data stream (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five benchmark scenes (two with masks beside them), a bomb, an SVG and a truncated JPEG."""
    root = tmp_path_factory.mktemp("explain-in")
    scenes = synth.generate(5, seed=4242, workers=1)
    for i in range(5):
        cv2.imwrite(str(root / f"img{i:02d}.png"), cv2.cvtColor(scenes.images[i], cv2.COLOR_RGB2BGR))
        if i < 2:
            cv2.imwrite(str(root / f"img{i:02d}_mask.png"), scenes.masks[i].astype(np.uint8) * 255)
    (root / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    (root / "logo.svg").write_text("<svg width='4' height='4'></svg>")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def assert_same_csv(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.keys() == b.keys()
        for key in a:
            x, y = _number(a[key]), _number(b[key])
            if x is None or y is None:
                assert a[key] == b[key], (key, a, b)
            else:
                assert abs(x - y) <= TOL, (key, a, b)


def _without(value, keys=("created", "timings_ms")):
    """A report without what legitimately differs between two runs (clock time)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def test_batch_equals_the_one_image_path_and_bad_files_are_skipped_and_listed(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = explain_paths([str(folder)], out, MODELS, METHODS, progress=False, batch_size=3, workers=2, device="cpu")
    err = capsys.readouterr().err
    assert code == 1, err
    # a bomb used to stop the whole run with exit status 2: its message says "the limit is", which the loop took
    # for a mistake in the command; now every file's decoding error is that file's, whatever it says
    assert f"skipped {folder / 'bomb.png'}: The image declares 10000 megapixels; the limit is 80 megapixels" in err
    assert f"skipped {folder / 'logo.svg'}: not a supported image (.svg)" in err
    assert f"skipped {folder / 'broken.jpg'}: The image file is truncated or corrupt" in err
    assert "5 of 7 images processed in " in err and "images/s); 1 other file(s) skipped; results in" in err
    stems = [f"img{i:02d}" for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_grid.png" for s in stems] + [f"{s}.json" for s in stems] + ["predictions.csv", "scores.csv"])

    ref_predictions, ref_scores = [], []
    for stem in stems:  # the one-image path: what the page runs, one compare() per image
        path = folder / f"{stem}.png"
        r = pipeline.run(pipeline.Request(image=path, models=MODELS, methods=METHODS, mask=mask_beside(path),
                                          source=str(path), device="cpu"))
        ref_predictions += [{k: str(v) for k, v in {**row, "image": str(path)}.items()} for row in r.predictions]
        ref_scores += [{"image": str(path), "model": m, "map": name, **{k: str(v) for k, v in s.items()}}
                       for m, per_map in r.scores.items() for name, s in per_map.items()]
        report = json.loads((out / f"{stem}.json").read_text())
        assert_json_close(_without(report), _without(json.loads(json.dumps(r.report))), 1e-5, stem)
        grid = cv2.imread(str(out / f"{stem}_grid.png"))
        assert grid.shape == r.grid.shape
    assert len(ref_predictions) == 5 * 2 * 5 and len(ref_scores) == 2 * (2 + 3)
    assert_same_csv(_rows(out / "predictions.csv"), ref_predictions)
    assert_same_csv(_rows(out / "scores.csv"), ref_scores)


NEW_METHODS = ["gradcam", "finercam", "eigencam", "kpcacam", "gradcamelementwise", "eigengradcam"]


@pytest.mark.parametrize("flags, options", [
    (["--methods", ",".join(NEW_METHODS), "--layer", "layer2,layer3", "--amp"],
     {"layers": ["layer2", "layer3"], "eigen_smooth": False, "aug_smooth": False, "refine": False, "sess": 0,
      "amp": False}),
    (["--methods", "gradcam", "--aug-smooth", "--eigen-smooth"],
     {"layers": ["layer3"], "eigen_smooth": True, "aug_smooth": True, "refine": False, "sess": 0, "amp": False}),
    (["--methods", "gradcam,gradcam++", "--layer", "layer2,layer3", "--refine", "--sess", "2"],
     {"layers": ["layer2", "layer3"], "eigen_smooth": False, "aug_smooth": False, "refine": True, "sess": 2,
      "amp": False}),
], ids=["new-methods-fused-amp", "aug-eigen-smooth", "refine-sess"])
def test_cli_options_reach_the_engine_the_report_and_the_npz(folder, tmp_path, capsys, flags, options):
    image = folder / "img02.png"
    out = tmp_path / "o"
    code = cli.main(["explain", str(image), "--models", "baseline,se", "--target", "ring", "--contrast", "star",
                     *flags, "--npz", "--device", "cpu", "--workers", "0", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == (["attnviz: warning: --amp needs a CUDA device; running in float32 on cpu."]
                        if "--amp" in flags else [])
    methods = flags[1].split(",")
    report = json.loads((out / "img02.json").read_text())
    for row in report["models"]:
        assert row["options"] == options
        assert row["layer"] == "+".join(options["layers"]) and row["device"] == "cpu"
        assert row["target"]["label"] == "ring" and row["contrast"]["label"] == "star"
    assert {(a["model"], a["method"]) for a in report["agreement"]} == {("se", m) for m in methods}
    # the maps are the API's with the same options: the flags reached the engine, not only the report
    ref = compare(["baseline", "se"], str(image), methods, "ring", options["layers"], contrast="star",
                  eigen_smooth=options["eigen_smooth"], aug_smooth=options["aug_smooth"], refine=options["refine"],
                  sess=options["sess"], device="cpu")
    with np.load(out / "img02_maps.npz") as npz:
        fields = list(npz["agreement_fields"])
        for e in ref.explanations:
            for m in methods:
                np.testing.assert_allclose(npz[f"{e.model}/cam/{m}/heatmap"], e.cams[m].heatmap, atol=1e-5,
                                           err_msg=f"{e.model}/{m}")
        for m in methods:
            numbers = dict(zip(fields, npz[f"se/agreement/{m}"]))
            for k in ("spearman", "top20_iou", "peak_distance"):
                assert abs(numbers[k] - ref.agreement[("se", m)][k]) <= 1e-4, (m, k)
            row = next(a for a in report["agreement"] if a["method"] == m)
            assert abs(row["spearman"] - numbers["spearman"]) <= 1e-6


def test_a_contrast_equal_to_the_target_or_an_unknown_layer_is_one_error_before_any_image(folder, tmp_path, capsys):
    image = str(folder / "img00.png")
    assert cli.main(["explain", image, "--models", "baseline", "--target", "star", "--contrast", "star",
                     "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert cli.main(["explain", image, "--models", "baseline", "--layer", "layer4", "--out", str(tmp_path / "b"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["attnviz: error: The contrast class 'star' is the target itself; choose another class.",
                   "attnviz: error: Layer 'layer4' is not available for baseline; it offers: layer1, layer2, "
                   "layer3."]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the acceptance test is for a machine without CUDA")
def test_device_cuda_without_cuda_is_exit_2_and_one_line(folder, tmp_path):
    r = subprocess.run([sys.executable, "-m", "attnviz", "explain", str(folder / "img00.png"), "--device", "cuda",
                        "--out", str(tmp_path / "o")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("attnviz: error: Device 'cuda' is not available") and "available: cpu" in lines[0]
    assert not (tmp_path / "o").exists()


def test_unknown_devices_are_one_line_and_models_lists_the_devices(folder, tmp_path, capsys):
    for device, phrase in (("tpu", "Unknown device 'tpu'"), ("cuda:99", "cuda"), ("mps", "'mps'")):
        assert cli.main(["explain", str(folder / "img00.png"), "--device", device, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0] and "available" in err[0], err
    assert cli.main(["models", "--devices"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("devices: ") and "cpu" in last


def test_serve_refuses_an_absent_device_before_starting_and_sets_the_pages_device(monkeypatch, capsys):
    started = []
    fake_ui = types.ModuleType("attnviz.app.web.page")
    fake_ui.launch = lambda **kw: started.append((kw, os.environ.get("ATTNVIZ_DEVICE")))
    monkeypatch.setitem(sys.modules, "attnviz.app.web.page", fake_ui)
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cuda:99")
    assert cli.main(["serve", "--port", str(free_port())]) == 2   # from the environment, as app.py / Docker
    assert cli.main(["serve", "--device", "quantum"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cuda:99" in err[0] and "quantum" in err[1], err
    assert started == []                                             # the page never started: no port was bound
    assert cli.main(["serve", "--device", "cpu", "--port", "7999"]) == 0
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    assert started == [({"host": host, "port": 7999, "models": None, "share": False, "prevent_thread_lock": True},
                         "cpu")]


def test_app_py_with_an_absent_device_exits_2_with_one_line():
    env = {**os.environ, "ATTNVIZ_DEVICE": "cuda:99", "GRADIO_SERVER_PORT": str(free_port())}
    r = subprocess.run([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "cuda:99" in lines[0] and "available: " in lines[0], lines


def test_methods_help_and_the_readme_name_every_method_and_explain_option():
    assert all(m in cli.methods_help() for m in method_names())
    readme = (PROJECT_ROOT / "README.md").read_text()
    command_line = readme[readme.index("## Command line"):readme.index("## Python API")]
    assert all(f"`{m}`" in command_line for m in method_names())
    sub = next(a for a in cli.build_parser()._actions if a.choices and "explain" in a.choices)
    options = [o for a in sub.choices["explain"]._actions for o in a.option_strings if o.startswith("--")]
    assert {"--device", "--amp", "--batch-size", "--workers", "--contrast", "--eigen-smooth"} <= set(options)
    assert [o for o in options if o not in command_line] == ["--help"]


def _same_folder(ours: Path, ref: Path) -> None:
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        a, b = ours / name, ref / name
        if name.endswith(".csv"):
            assert_same_csv(_rows(a), _rows(b))
        elif name.endswith(".json"):
            assert_json_close(_without(json.loads(a.read_text())), _without(json.loads(b.read_text())), 1e-5, name)
        elif name.endswith(".png"):
            x, y = cv2.imread(str(a)), cv2.imread(str(b))
            # the two processes' forwards differ by ~1e-7 (maps too, as with main's numpy formulas); where such a
            # difference crosses a uint8 step of the heatmap, the blended JET colour moves by up to 4 levels
            diff = np.abs(x.astype(int) - y.astype(int)).max(axis=-1)
            assert x.shape == y.shape and diff.max() <= 4 and (diff > 1).sum() <= 16, name
        else:
            with np.load(io.BytesIO(a.read_bytes())) as x, np.load(io.BytesIO(b.read_bytes())) as y:
                assert sorted(x.files) == sorted(y.files)
                for k in x.files:
                    if x[k].dtype.kind == "U":
                        assert (x[k] == y[k]).all()
                    else:
                        np.testing.assert_allclose(x[k], y[k], atol=1e-4, err_msg=f"{name}:{k}")


def test_torchrun_two_gloo_ranks_write_the_one_process_folder(folder, tmp_path, capsys):
    args = ["--models", "baseline", "--methods", "gradcam,gradcam++", "--npz", "--batch-size", "2",
            "--device", "cpu", "--quiet"]
    one = tmp_path / "one"
    assert cli.main(["explain", str(folder), *args, "--workers", "0", "--out", str(one)]) == 1
    capsys.readouterr()
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(free_port()), "-m", "attnviz", "explain", str(folder), *args, "--workers", "1",
                        "--out", str(two)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = r.stdout + r.stderr
    assert r.returncode == 1, output[-3000:]        # files were skipped, on both ranks
    for bad in ("bomb.png", "broken.jpg", "logo.svg"):
        assert output.count(f"skipped {folder / bad}") == 1, output[-3000:]   # rank 0 alone reports
    assert "5 of 7 images processed" in output
    _same_folder(two, one)
