"""The Data set tab through its handlers: the same results.json as `attnviz eval --data`, hostile archives as one
line with nothing outside the job folder, the per-server cap, Stop keeping the finished images, the job folder
removed when the tab closes, "where they disagree" rows, and the /evaluate endpoint from gradio_client."""
from __future__ import annotations

import json
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_json_close, zip_folder
from PIL import Image

from attnviz.app import cli
from attnviz.app.render.draw import DARK, LIGHT
from attnviz.app.web import assets
from attnviz.app.web.dataset import handlers, jobs, settings
from attnviz.data.export import export_scenes
from attnviz.errors import AttnvizError

MODELS = ["baseline", "se", "cbam"]
METHODS = ["gradcam", "gradcam++"]
# what differs between two runs of the same work: how it was started, where the data was, when and how long
RUN_FIELDS = ("command", "data", "seconds", "machine")


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(settings, "JOB_ROOT", tmp_path / "jobs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for key in list(jobs._by_session):
        jobs.release_session(key)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, zip) of 12 exported benchmark scenes with masks, the zip wrapped in one top folder."""
    root = tmp_path_factory.mktemp("export")
    folder = export_scenes(root / "scenes", 12, 777).root
    return folder, zip_folder(folder, root / "scenes.zip", wrapper="scenes/")


def tab(name: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)


def run_tab(session: str, archive, models=MODELS, methods=METHODS, source=handlers.UPLOAD, n=None) -> list[tuple]:
    return list(handlers.on_run(source, n, None, str(archive) if archive else None, None, models, methods, False,
                                None, request=tab(session)))


def test_the_tabs_numbers_are_attnviz_evals_on_the_same_folder(exported, tmp_path):
    folder, archive = exported
    updates = run_tab("a", archive)
    status, table, forest, findings, skipped, variant, method, files = updates[-1][2:]
    assert status.startswith("**Done:** 12 images"), status
    page = json.loads(Path(next(f for f in files if f.endswith("results.json"))).read_text())
    assert cli.main(["eval", "--data", str(folder), "--models", ",".join(MODELS), "--methods", ",".join(METHODS),
                     "--localisation-only", "--road", "0", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    reference = json.loads((tmp_path / "cli" / "results.json").read_text())
    for key in RUN_FIELDS:
        page.pop(key), reference.pop(key)
    assert_json_close(page, reference, tol=0)
    assert {Path(f).name for f in files} == {"results.json", "results.md", "results.png", "forest.png",
                                             "per_image.csv"}
    # the table shows results.json's numbers: SE's Grad-CAM EPG mean and its paired difference
    se = next(r for r in reference["models"] if r["model"] == "se")
    assert f"{se['maps']['gradcam']['energy_pointing_game']['mean'] * 100:.1f} [" in table
    assert f"Δ {se['vs_baseline']['gradcam']['energy_pointing_game']['mean'] * 100:+.1f} [" in table
    assert Path(forest).name == "forest.png" and "What the numbers say" in findings
    assert [c for _, c in variant["choices"]] == ["se", "cbam"] and method["value"] == "gradcam"
    # progress was reported while it ran, and the buttons were flipped
    assert updates[0][0]["interactive"] is False and updates[0][1]["interactive"] is True
    assert updates[-1][0]["interactive"] is True and updates[-1][1]["interactive"] is False


def test_where_they_disagree_rows_and_opening_one_on_compare(exported):
    _, archive = exported
    run_tab("d", archive, models=["baseline", "se"], methods=["gradcam"])
    gallery, picks = handlers.on_disagree("se", "gradcam", request=tab("d"))
    assert len(gallery) == len(picks) == settings.DISAGREE_K
    result = jobs.current("d").result
    rho = result["models"][1]["per_image"]["agreement"]["gradcam"]["spearman"]
    assert [p["spearman"] for p in picks] == sorted(rho)[:settings.DISAGREE_K]
    assert all(Path(path).is_file() and Path(path).is_relative_to(jobs.current("d").folder) for path, _ in gallery)
    assert gallery[0][1].startswith(f"{picks[0]['id']}: Spearman {picks[0]['spearman']:.2f}")
    width, height = Image.open(gallery[0][0]).size      # the page reserves this shape before the picture loads
    assert f"{width} / {height}" == assets.DISAGREE_ROW_RATIO
    image, models, methods, tabs = handlers.on_open_in_compare(SimpleNamespace(index=1), picks)
    assert Path(image).is_file() and models == ["baseline", "se"] and methods == ["gradcam"]
    assert tabs.selected == "compare"
    light_top = np.asarray(Image.open(gallery[0][0]))[:3]
    dark_gallery, _ = handlers.on_disagree("se", "gradcam", True, request=tab("d"))   # the page in dark mode
    dark_top = np.asarray(Image.open(dark_gallery[0][0]))[:3]                          # the title band's top
    assert (light_top == LIGHT.paper).all(axis=-1).mean() > 0.9
    assert (dark_top == DARK.paper).all(axis=-1).mean() > 0.9
    assert handlers.on_disagree("se", "gradcam", request=tab("someone else")) == ([], [])


def hostile(tmp_path: Path, exported_zip: Path, name: str) -> Path:
    path = tmp_path / f"{name}.zip"
    path.write_bytes(exported_zip.read_bytes())
    with zipfile.ZipFile(path, "a") as zf:
        if name == "traversal":
            zf.writestr("../../escaped.png", b"x")
        elif name == "absolute":
            zf.writestr(str(tmp_path / "absolute.png"), b"x")
        elif name == "nested":
            zf.writestr("scenes/circle/inner.zip", exported_zip.read_bytes())
        elif name == "symlink":
            info = zipfile.ZipInfo("scenes/circle/link.png")
            info.create_system, info.external_attr = 3, (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("case, reason", [("traversal", "'..'"), ("absolute", "absolute path"),
                                          ("nested", "nested archives"), ("symlink", "symbolic link")])
def test_a_hostile_member_is_one_skipped_line_and_stays_out(exported, tmp_path, case, reason):
    _, archive = exported
    path = hostile(tmp_path, archive, case)
    status, *_ , skipped, _, _, files = run_tab(f"h-{case}", path, models=["baseline"], methods=["gradcam"])[-1][2:]
    assert status.startswith("**Done:** 12 images") and "1 file(s) skipped" in status
    assert reason in skipped and skipped.count("\n* ") == 1
    assert not (tmp_path.parent / "escaped.png").exists() and not (tmp_path / "absolute.png").exists()
    job = jobs.current(f"h-{case}")
    outside = [p for p in settings.JOB_ROOT.rglob("*") if not p.is_relative_to(job.folder)]
    assert outside == [] and any(job.folder.rglob("*.png"))


@pytest.mark.parametrize("case", ["bomb", "too many", "empty", "not a zip"])
def test_a_refused_archive_is_one_line_and_the_tab_runs_again(exported, tmp_path, monkeypatch, case):
    _, archive = exported
    path = tmp_path / "bad.zip"
    if case == "bomb":
        monkeypatch.setenv("ATTNVIZ_ARCHIVE_MAX_MB", "1")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("circle/huge.png", bytes(3 * 1024 * 1024))
        expected = "decompression bomb"
    elif case == "too many":
        monkeypatch.setenv("ATTNVIZ_ARCHIVE_MAX_FILES", "10")
        path = archive
        expected = "an archive may hold at most 10"
    elif case == "empty":
        zipfile.ZipFile(path, "w").close()
        expected = "no image to use"
    else:
        path.write_bytes(b"not a zip")
        expected = "not a zip archive"
    status = run_tab("r", path, models=["baseline"], methods=["gradcam"])[-1][2]
    assert "**Not started.**" in status and expected in status
    assert len([line for line in status.splitlines() if line.strip() and "div" not in line]) == 1
    job = jobs.current("r")
    assert [p for p in job.folder.rglob("*") if p.is_file()] == []
    monkeypatch.delenv("ATTNVIZ_ARCHIVE_MAX_MB", raising=False)
    monkeypatch.delenv("ATTNVIZ_ARCHIVE_MAX_FILES", raising=False)
    assert run_tab("r", exported[1], models=["baseline"], methods=["gradcam"])[-1][2].startswith("**Done:**")


def test_refusals_before_a_job_starts():
    status = run_tab("x", None, models=[], methods=METHODS)[-1][2]
    assert "Choose at least one model" in status
    status = run_tab("x", None, source=handlers.UPLOAD)[-1][2]
    assert "Upload a .zip" in status
    status = run_tab("x", None, source=handlers.BENCHMARK, n=settings.max_images() + 1)[-1][2]
    assert "Choose between 1 and" in status
    with pytest.raises(AttnvizError, match="Choose one of the server's data sets"):   # a typed path is never used
        handlers.build_request(handlers.SERVER, None, None, None, "/etc", ["baseline"], METHODS, False, None)


def test_stop_keeps_the_finished_images_and_the_server_cap_refuses_a_second_job(monkeypatch):
    monkeypatch.setattr(handlers, "POLL_S", 0.05)
    request = handlers.build_request(handlers.BENCHMARK, 60, None, None, None, ["baseline", "se"], ["gradcam"],
                                     False, None)
    request.batch_size = 4
    job = jobs.start("long", request)
    refused = run_tab("other", None, source=handlers.BENCHMARK, n=4)[-1][2]
    assert "the most it runs at once (ATTNVIZ_DATASET_JOBS)" in refused
    deadline = time.monotonic() + 120
    while (job.progress is None or job.progress.images_done < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handlers.on_stop(request=tab("long")).startswith("**Stopping**")
    asked = time.monotonic()
    assert job.done.wait(60)
    assert time.monotonic() - asked < 10
    result = job.result
    assert result["stopped"]["images_total"] == 60 and 4 <= result["stopped"]["images_done"] < 60
    assert result["n"] == len(result["ids"]) == result["stopped"]["images_done"]
    status, table = handlers._final(job)[:2]
    assert status.startswith(f"**Stopped:** {result['n']} of 60 images") and "over " + str(result["n"]) in table


def test_closing_the_tab_removes_its_job_folder_and_another_tab_never_sees_it(exported):
    _, archive = exported
    run_tab("closing", archive, models=["baseline"], methods=["gradcam"])
    job = jobs.current("closing")
    assert (job.unpacked / "scenes" / "circle").is_dir() and jobs.current("another") is None
    handlers.unloader()(tab("closing"))
    assert not job.folder.exists() and jobs.current("closing") is None


def test_a_running_job_is_stopped_and_removed_when_its_tab_closes():
    request = handlers.build_request(handlers.BENCHMARK, 80, None, None, None, ["baseline", "se"], ["gradcam"],
                                     False, None)
    request.batch_size = 4
    job = jobs.start("busy", request)
    while job.progress is None and not job.done.is_set():
        time.sleep(0.05)
    closing = threading.Thread(target=jobs.release_session, args=("busy",))
    closing.start()
    closing.join(30)
    assert not closing.is_alive() and job.done.is_set() and not job.folder.exists()
    assert jobs.running() == 0


def test_the_evaluate_endpoint_from_gradio_client(exported):
    from gradio_client import Client, handle_file
    from webapp import running_app

    _, archive = exported
    with running_app() as url:
        client = Client(url, verbose=False)
        result, files = client.predict(handle_file(str(archive)), "baseline,se", "gradcam", 100, 0, False,
                                       api_name="/evaluate")
        assert result["n"] == 12 and [r["model"] for r in result["models"]] == ["baseline", "se"]
        assert {Path(f).name for f in files} >= {"results.json", "per_image.csv", "forest.png"}
        assert json.loads(Path(next(f for f in files if f.endswith("results.json"))).read_text())["ids"] == \
            result["ids"]
        with pytest.raises(Exception, match="Choose at least one CAM method|not a zip"):
            bad = Path(files[0]).with_name("bad.zip")
            bad.write_bytes(b"nope")
            client.predict(handle_file(str(bad)), "baseline", "gradcam", 100, 0, False, api_name="/evaluate")
    assert jobs.running() == 0 and not any(settings.JOB_ROOT.glob("job-*"))


def test_an_operator_folder_is_chosen_by_name_only(exported, monkeypatch):
    folder, _ = exported
    monkeypatch.setenv("ATTNVIZ_DATASETS", f"scenes={folder};missing=/no/such/folder")
    assert list(settings.operator_folders()) == ["scenes"] and handlers.SERVER in handlers.sources()
    updates = list(handlers.on_run(handlers.SERVER, None, None, None, "scenes", ["baseline"], ["gradcam"], False,
                                   None, request=tab("op")))
    assert updates[-1][2].startswith("**Done:** 12 images")
    assert jobs.current("op").result["data"] == str(folder)
    refused = list(handlers.on_run(handlers.SERVER, None, None, None, str(folder), ["baseline"], ["gradcam"], False,
                                   None, request=tab("op")))[-1][2]
    assert "Choose one of the server's data sets" in refused
