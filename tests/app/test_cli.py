"""The `attnviz` command line: folders, bad files, CSVs, exit codes, the model list."""
from __future__ import annotations

import csv
import subprocess
import sys

import cv2
import numpy as np
from conftest import PROJECT_ROOT

from attnviz.data import synth


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnviz", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _write_scenes(folder, n: int, with_masks: int) -> list[str]:
    scenes = synth.generate(n, seed=4242, workers=1)
    names = []
    for i in range(n):
        stem = f"img{i:02d}"
        cv2.imwrite(str(folder / f"{stem}.png"), cv2.cvtColor(scenes.images[i], cv2.COLOR_RGB2BGR))
        if i < with_masks:
            cv2.imwrite(str(folder / f"{stem}_mask.png"), scenes.masks[i].astype(np.uint8) * 255)
        names.append(stem)
    return names


def test_explain_folder_of_ten_with_a_bad_file(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    stems = _write_scenes(inp, 10, with_masks=3)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    r = run_cli("explain", str(inp), "--models", "baseline,cbam", "--methods", "gradcam,layercam", "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "skipped" in r.stderr and "broken.jpg" in r.stderr and "truncated or corrupt" in r.stderr
    assert "10 of 11 images processed" in r.stderr
    assert sorted(p.name for p in out.glob("*_grid.png")) == sorted(f"{s}_grid.png" for s in stems)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 * 2 * 5
    assert {r["model"] for r in rows} == {"baseline", "cbam"}
    with open(out / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    # 3 images have masks beside them; each model scores 2 CAMs (+ CBAM's own spatial map)
    assert len(scores) == 3 * (2 + 3)
    assert {s["map"] for s in scores} == {"gradcam", "layercam", "attention"}


def test_explain_single_file_with_target_and_layer(tmp_path):
    _write_scenes(tmp_path, 1, with_masks=0)
    r = run_cli("explain", str(tmp_path / "img00.png"), "--models", "triplet", "--target", "star",
                "--layer", "layer2", "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 0, r.stderr
    import json

    report = json.loads((tmp_path / "o" / "img00.json").read_text())
    assert report["models"][0]["target"]["label"] == "star" and report["models"][0]["layer"] == "layer2"


def test_user_errors_exit_2_with_one_line(tmp_path):
    _write_scenes(tmp_path, 1, with_masks=0)
    r = run_cli("explain", str(tmp_path / "img00.png"), "--models", "nope", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "attnviz: error: Unknown model 'nope'" in r.stderr
    r = run_cli("explain", str(tmp_path / "missing_dir_or_file.png"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "No image could be processed" in r.stderr


def test_models_lists_the_bundled_zoo_as_available_offline():
    r = run_cli("models")
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    for name in ("baseline", "se", "eca", "cbam", "triplet", "coord"):
        assert "available offline" in lines[name] and "test accuracy" in lines[name]
