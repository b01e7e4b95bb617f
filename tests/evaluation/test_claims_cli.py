"""`attnviz claims --data DIR --models ...` on exported folders (masks, VOC boxes): eval runs first, the rows
of the models present are tested, the others say which model type is missing; user errors are one line."""
from __future__ import annotations

import json

import pytest

from attnviz.app import cli
from attnviz.data.export import export_scenes
from attnviz.evaluation.claims import NOT_TESTED
from attnviz.evaluation.claims.markdown import claims_markdown

N = 6


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims-export")
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setenv("ATTNVIZ_CACHE", str(root / "cache"))
        export_scenes(root / "masks", N, seed=778)
        export_scenes(root / "boxes", N, seed=778, boxes=True)
    return root / "masks", root / "boxes"


@pytest.mark.parametrize("kind", ["masks", "boxes"])
def test_claims_on_an_exported_folder(folders, kind, tmp_path, capsys):
    data = folders[0] if kind == "masks" else folders[1]
    out = tmp_path / "out"
    code = cli.main(["claims", "--data", str(data), "--models", "baseline,cbam,coord", "--out", str(out),
                     "--batch-size", "4", "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "claims.json").read_text())
    assert (out / "claims.md").read_text() == claims_markdown(doc)
    assert (out / "results.json").exists() and doc["results"]["data"] == str(data)
    rows = {r["id"]: r for r in doc["rows"]}
    for tested in ("1a", "1b", "3a", "3c", "9-cbam", "9-coord"):
        assert rows[tested]["verdict"] != NOT_TESTED and rows[tested]["value"]["n"] > 0, tested
    assert rows["2a"]["verdict"] == NOT_TESTED and "no Triplet Attention model" in rows["2a"]["note"]
    assert rows["7"]["verdict"] == NOT_TESTED and "vision transformer" in rows["7"]["note"]
    runs = {r["model"] for r in doc["runs"]}
    assert {"baseline", "cbam", "coord"} <= runs
    assert all(r["measured"] for r in doc["runs"] if r["attention"] in ("none", "cbam", "coord"))
    assert "rows:" in capsys.readouterr().err
    # a second run reads the results.json it left; one for other data is refused, not overwritten
    assert cli.main(["claims", "--data", str(data), "--models", "cbam", "--out", str(out), "--quiet"]) == 0
    other = folders[1] if kind == "masks" else folders[0]
    assert cli.main(["claims", "--data", str(other), "--out", str(out), "--quiet"]) == 2
    assert cli.main(["claims", "--results", str(tmp_path / "none.json"), "--out", str(out), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("attnviz: error: ")]
    assert len(err) == 2 and "choose another --out" in err[0] and "does not exist" in err[1]
