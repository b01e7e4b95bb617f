"""Issue 30, item 2: a tab's files die with the tab (sessions.TabFiles), over HTTP and in the registry itself.

The browser version (a real tab closed, every URL it was served fetched by a second browser context) is in
tests/app/web/test_browser_issue30.py.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from webapp import running_app

from attnviz.app.web import sessions


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def url():
    with running_app() as u:
        yield u


def _unique_photo(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / f"mine_{seed}.png"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_every_file_a_released_session_was_served_answers_403_to_another_client(url, tmp_path):
    client = Client(url, verbose=False)
    photo = _unique_photo(tmp_path, 1)
    client.predict(handle_file(str(photo)), "baseline", "gradcam", "", api_name="/compare")
    owned = sessions.tab_files.owned(client.session_hash)
    names = {Path(p).name for p in owned}
    assert photo.name in names                 # the upload
    assert any(n.endswith((".png", ".webp", ".jpeg")) and n != photo.name for n in names)   # the grid picture
    file_urls = [f"{url}gradio_api/file={p}" for p in owned]
    assert all(status_of(u) == 200 for u in file_urls)          # another client (plain HTTP, no cookies) gets them
    deleted = sessions.release_tab_files(client.session_hash)   # what the page's unload event does
    assert sorted(deleted) == sorted(owned)
    assert {status_of(u) for u in file_urls} <= {403, 404}
    assert not any(Path(p).exists() for p in owned)


def test_registry_shares_files_between_tabs_and_never_deletes_protected_or_outside_files(tmp_path, monkeypatch):
    files = sessions.TabFiles(ttl_s=60)
    cache = tmp_path / "cache"
    files.add_root(cache)
    shared, mine, example = cache / "h1" / "a.png", cache / "h2" / "b.png", cache / "h3" / "ex.png"
    outside = tmp_path / "elsewhere.txt"
    for p in (shared, mine, example, outside):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    files.protected = lambda: {str(example.resolve())}
    for p in (shared, mine, example, outside):
        files.own("A", p)
    files.own("B", shared)
    files.release("A")
    assert not mine.exists() and not mine.parent.exists()      # its content folder went with it
    assert shared.exists() and example.exists() and outside.exists()
    files.release("B")
    assert not shared.exists()


def test_an_idle_tab_expires(tmp_path):
    files = sessions.TabFiles(ttl_s=10)
    folder = tmp_path / "cache" / "job"
    folder.mkdir(parents=True)
    files.add_root(tmp_path / "cache")
    files.own("A", folder)
    assert files.expire(now=time.monotonic() + 5) == [] and folder.exists()
    assert files.expire(now=time.monotonic() + 11) == [str(folder.resolve())] and not folder.exists()


def test_the_page_owns_its_download_folders_per_tab():
    from attnviz.app.web import choices, handlers
    from attnviz.data.examples import EXAMPLES_DIR

    scene = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]

    class Request:
        session_hash = "tab-downloads"

    out = handlers.on_compare(str(scene), ["baseline"], ["gradcam"], choices.TOP1, [choices.DEFAULT_LAYER], 0.5,
                              "per model", "jet", None, False, None, None, [], progress=None, request=Request())
    folder = Path(out[7][0]).parent
    assert str(folder.resolve()) in sessions.tab_files.owned("tab-downloads")
    sessions.release_tab_files("tab-downloads")
    assert not folder.exists()
