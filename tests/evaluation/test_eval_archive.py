"""`attnviz eval --data x.zip` goes through the folder path (same numbers), and a watched run reports its progress
and stops with the chunks every model finished — the hooks the page's Data set tab uses."""
from __future__ import annotations

import csv
import json
import shutil
import zipfile

import pytest
import torch
from conftest import zip_folder

from attnviz.app import cli
from attnviz.data.export import export_scenes
from attnviz.evaluation import run as evaluate

COMMON = dict(models=["baseline", "se"], methods=("gradcam",), road_scenes=0, progress=False, faithfulness=False)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def per_image(result: dict) -> dict:
    return {row["model"]: row["per_image"] for row in result["models"]}


def test_a_zip_scores_exactly_like_its_folder_and_reports_what_it_skipped(tmp_path):
    folder = export_scenes(tmp_path / "export", 6, 777).root
    archive = zip_folder(folder, tmp_path / "set.zip", wrapper="export/")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../escape.png", b"x")
        zf.writestr("export/circle/readme.txt", b"x")
    plain = evaluate.run_eval(data=folder, out=tmp_path / "a", **COMMON)
    zipped = evaluate.run_eval(data=archive, out=tmp_path / "b", **COMMON)
    assert per_image(zipped) == per_image(plain) and zipped["ids"] == plain["ids"]
    assert zipped["models"][1]["vs_baseline"] == plain["models"][1]["vs_baseline"]
    assert zipped["data"] == str(archive)
    skipped = {s["image"]: s["reason"] for s in zipped["skipped"]}
    assert "'..'" in skipped["../escape.png"] and "unsupported file type" in skipped["export/circle/readme.txt"]
    assert not (tmp_path / "escape.png").exists()
    rows = list(csv.DictReader((tmp_path / "b" / "per_image.csv").open()))
    assert len(rows) == 2 * 6 and {r["model"] for r in rows} == {"baseline", "se"}
    se = [r for r in rows if r["model"] == "se"]
    assert [float(r["iou"]) for r in se] == pytest.approx(zipped["models"][1]["per_image"]["values"]["gradcam"]["iou"])
    assert all(r["agreement_spearman"] for r in se) and not any(
        r["agreement_spearman"] for r in rows if r["model"] == "baseline")


def test_cli_eval_takes_a_zip_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    folder = export_scenes(tmp_path / "export", 3, 777).root
    archive = zip_folder(folder, tmp_path / "set.zip")
    out = tmp_path / "out"
    assert cli.main(["eval", "--data", str(archive), "--models", "baseline", "--methods", "gradcam",
                     "--localisation-only", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["n"] == 3
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    assert cli.main(["eval", "--data", str(bad), "--models", "baseline", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("attnviz: error: bad.zip: not a zip archive"), err


def test_hooks_report_progress_and_a_stop_keeps_the_finished_chunks(tmp_path):
    folder = export_scenes(tmp_path / "export", 7, 777).root
    full = evaluate.run_eval(data=folder, out=tmp_path / "full", batch_size=3, **COMMON)
    seen: list[evaluate.EvalProgress] = []
    partials: list[dict] = []

    def on_progress(p: evaluate.EvalProgress) -> None:
        seen.append(p)
        if p.images_done and not partials:
            partials.append(p.partial())

    hooks = evaluate.EvalHooks(on_progress, should_stop=lambda: len(seen) >= 3)   # stop during the second chunk
    stopped = evaluate.run_eval(data=folder, out=tmp_path / "stopped", batch_size=3, hooks=hooks, **COMMON)
    assert [(p.step, p.steps, p.model, p.images_done, p.images_total) for p in seen] == [
        (1, 6, "baseline", 0, 7), (2, 6, "se", 3, 7), (3, 6, "baseline", 3, 7)]
    assert stopped["stopped"] == {"images_done": 3, "images_total": 7} and stopped["n"] == 3
    assert stopped["ids"] == full["ids"][:3]
    for name, values in per_image(stopped).items():
        assert values["correct"] == per_image(full)[name]["correct"][:3]
        assert values["values"]["gradcam"]["iou"] == per_image(full)[name]["values"]["gradcam"]["iou"][:3]
    assert partials[0]["ids"] == full["ids"][:3] and "maps" in partials[0]["models"][0]
    assert json.loads((tmp_path / "stopped" / "results.json").read_text())["stopped"]["images_done"] == 3
    shutil.rmtree(tmp_path / "export")
