"""`attnviz eval`: batched scoring against main's per-image numbers, --data (scenes, boxes, ImageNet layout),
confidence intervals and paired differences recomputed from results.json, agreement, training-seed replicates,
sanity flags, --update, and a two-rank torchrun run equal to the one-process run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, assert_json_close
from PIL import Image

from attnviz.api import explain
from attnviz.app import cli
from attnviz.data import datasets, synth
from attnviz.data.export import export_scenes
from attnviz.data.scenes import EVAL_SEED, cached_scenes
from attnviz.evaluation import report as eval_report
from attnviz.evaluation import run as evaluate
from attnviz.evaluation import stats
from attnviz.evaluation.report import read_sanity_flags
from attnviz.evaluation.scoring import ScoringCount, score_chunk
from attnviz.metrics import scores as metrics
from attnviz.metrics.agreement import map_agreement
from attnviz.metrics.localisation import OWN_MAP, mask_for_view
from attnviz.zoo import registry as zoo
from attnviz.zoo.files import sha256_file

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "eval_main_reference.json"


@pytest.fixture(autouse=True)
def _one_thread_private_cache(tmp_path, monkeypatch):
    """Scenes in a private cache; one torch thread (small batches run faster without OpenMP hand-offs on a
    shared two-core machine)."""
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the batched path reproduces main's per-image numbers --------------------------------------------------

def test_batched_scores_equal_mains_per_image_numbers_and_identical_maps_are_scored_once():
    """Scenes 0 and 1 in one chunk; the reference numbers were written by main's per-image evaluation."""
    ref = json.loads(REFERENCE.read_text())
    scenes = cached_scenes(2, ref["seed"], synth.IMAGE_SIZE)
    loaded = zoo.load(ref["model"], "cpu")
    count = ScoringCount()
    methods = ("gradcam", "hirescam")   # on Criss-Cross's head HiResCAM's map is bit-identical to Grad-CAM's
    scores, cams = score_chunk(loaded, list(scenes.images), [int(v) for v in scenes.labels], list(scenes.masks),
                               methods, road=[False, False], seeds=[0, 0], batch_size=2, count=count)
    for item, s in zip(ref["scenes"], scores):
        assert set(s.values) == set(methods) | {OWN_MAP}
        for m in (*methods, OWN_MAP):
            for k, v in item["values"][m].items():
                assert s.values[m][k] == pytest.approx(v, abs=1e-5), (item["index"], m, k)
    assert count.maps_requested == 6 and count.maps_scored == 4 and count.identical == {"hirescam = gradcam": 2}
    assert all(np.array_equal(c["hirescam"], c["gradcam"]) for c in cams)


# ---- --data: the exported scenes score like the scenes; boxes; the CLI -----------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setenv("ATTNVIZ_CACHE", str(root / "cache"))
        masks, boxes = root / "masks", root / "boxes"
        export_scenes(masks, 10, seed=777)
        export_scenes(boxes, 10, seed=777, boxes=True)
        return masks, boxes, cached_scenes(10, 777, synth.IMAGE_SIZE)


def _by_scene(result: dict, key: str = "gradcam") -> dict[int, dict]:
    """Per-image values of the first model, keyed by scene index (ids are file paths for --data)."""
    row = result["models"][0]
    out = {}
    for j, image_id in enumerate(result["ids"]):
        index = int(str(image_id).rsplit("_", 1)[-1].split(".")[0]) if isinstance(image_id, str) else image_id
        out[index] = {k: v[j] for k, v in row["per_image"]["values"][key].items()}
    return out


def test_data_folder_export_scores_exactly_like_the_scenes_and_boxes_give_box_iou(exported, tmp_path):
    masks, boxes, scenes = exported
    common = dict(models=["baseline"], methods=("gradcam",), road_scenes=0, progress=False, faithfulness=False)
    direct = evaluate.run_eval(n=10, seed=777, out=tmp_path / "scenes", **common)
    folder = evaluate.run_eval(data=masks, out=tmp_path / "folder", **common)
    for key in ("pointing_game", "energy_pointing_game", "iou"):
        a, b = direct["models"][0]["maps"]["gradcam"][key], folder["models"][0]["maps"]["gradcam"][key]
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-6) and a["n"] == b["n"] == 10
    assert _by_scene(direct) == _by_scene(folder)
    assert folder["data"] == str(masks) and folder["seed"] is None and "--data" in folder["command"]

    boxed = evaluate.run_eval(data=boxes, out=tmp_path / "boxes", **common)
    loaded = zoo.load("baseline", "cpu")
    for i, values in _by_scene(boxed).items():
        x0, y0, x1, y1 = (int(v) for v in scenes.boxes[i])
        box = np.zeros(scenes.masks[i].shape, bool)
        box[y0:y1, x0:x1] = True
        heat = explain(loaded, scenes.images[i], ("gradcam",), target=int(scenes.labels[i])).cams["gradcam"].heatmap
        assert values["iou"] == pytest.approx(metrics.iou(heat, box), abs=1e-5), i
    assert boxed["models"][0]["maps"]["gradcam"]["iou"]["mean"] != pytest.approx(
        folder["models"][0]["maps"]["gradcam"]["iou"]["mean"], abs=1e-3)   # boxes are not the masks


def test_cli_eval_data_with_a_user_checkpoint_and_user_errors(exported, tmp_path, capsys):
    from attnviz.zoo.files import save_safetensors

    masks, _, _ = exported
    torch.manual_seed(0)
    import models

    net = models.build("small_resnet", num_classes=len(synth.CLASS_NAMES))
    ckpt = save_safetensors(net, tmp_path / "mine.safetensors")
    out = tmp_path / "out"
    code = cli.main(["eval", "--data", str(masks), "--arch", "small_resnet", "--checkpoint", str(ckpt),
                     "--methods", "gradcam", "--localisation-only", "--n", "4", "--batch-size", "3", "--out", str(out),
                     "--quiet"])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in result["models"]] == ["small_resnet@mine"] and result["n"] == 4
    assert result["batch_size"] == 3 and result["localisation_only"] is True
    assert "scored 4 of 4 maps" in capsys.readouterr().err
    assert cli.main(["eval", "--data", str(masks), "--seed", "3", "--out", str(out)]) == 2
    assert cli.main(["eval", "--data", str(tmp_path / "nowhere"), "--models", "baseline", "--out", str(out)]) == 2
    assert cli.main(["eval", "--models", "baseline", "--device", "cuda:7", "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("attnviz: error: ") for line in err), err
    assert "--seed" in err[0] and "not a folder" in err[1] and "cuda" in err[2]


def test_imagenet_layout_with_wordnet_folders_boxes_and_bad_files(tmp_path):
    """n0xxxxxxx/ folders with VOC boxes, a torchvision ResNet-18 with random weights (classes matched by WordNet
    id); an image without ground truth still gets deletion / insertion; bad files are reported and skipped."""
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    layout = {"n01440764": 0, "n01443537": 1}
    box = datasets.VocBox("fish", 10, 8, 50, 40)
    for wnid in layout:
        (root / wnid).mkdir(parents=True)
        for k in range(2):
            stem = f"ILSVRC2012_val_{wnid[-2:]}{k}"
            Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(root / wnid / f"{stem}.JPEG")
            if (wnid, k) != ("n01443537", 1):       # this one has no ground truth
                (root / wnid / f"{stem}.xml").write_bytes(datasets.voc_xml(f"{stem}.JPEG", 80, 60, [box], wnid))
    (root / "n01440764" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "not_a_class").mkdir()
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(root / "not_a_class" / "x.png")
    spec = zoo.register(zoo.random_spec("resnet18", 1000, name="tv-resnet18-random-eval", input_size=64,
                                        resize_size=64), replace=True)
    result = evaluate.run_eval(models=[spec.name], data=root, methods=("gradcam",), road_scenes=1, batch_size=2,
                               out=tmp_path / "out", progress=False)
    row = result["models"][0]
    ids = result["ids"]
    assert len(ids) == 6 and "n01440764/broken.JPEG" in ids
    reasons = {(s["image"], s.get("model")): s["reason"] for s in result["skipped"]}
    assert "truncated or corrupt" in reasons[("n01440764/broken.JPEG", None)]
    assert "no class named 'not_a_class'" in reasons[("not_a_class/x.png", spec.name)]
    values = row["per_image"]["values"]["gradcam"]
    scored = [j for j, c in enumerate(row["per_image"]["correct"]) if c is not None]
    assert [ids[j] for j in scored] == [i for i in ids if i.startswith("n0") and "broken" not in i]
    no_truth = ids.index("n01443537/ILSVRC2012_val_371.JPEG")
    assert values["iou"][no_truth] is None and values["deletion_auc"][no_truth] is not None
    assert row["maps"]["gradcam"]["iou"]["n"] == 3 and row["maps"]["gradcam"]["deletion_auc"]["n"] == 4
    assert values["road"][scored[0]] is not None and row["maps"]["gradcam"]["road"]["n"] == 1
    # IoU against the box, recomputed: the box mask goes through the model's resize + crop like the image
    loaded = zoo.load(spec, "cpu")
    j = scored[0]
    item = datasets.read_dataset(root, spec.class_names).items
    path = next(it for it in item if it.path.relative_to(root).as_posix() == ids[j])
    image, mask = path.load()
    e = explain(loaded, image, ("gradcam",), target=path.label)
    view = mask_for_view(mask, image.shape[:2], 64, 64)
    assert path.label == layout[path.class_folder]
    assert values["iou"][j] == pytest.approx(metrics.iou(e.cams["gradcam"].heatmap, view), abs=1e-5)
    assert "## Skipped (2)" in (tmp_path / "out" / "results.md").read_text()


# ---- statistics, agreement, replicates, sanity flags, --update ----------------------------------------------

def _fake_replicates(folder: Path) -> list[str]:
    """Cards + random small_resnet weights for baseline/cbam seeds 1 and 2 (the real ones train elsewhere)."""
    from safetensors.torch import save_file

    import models

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for base in ("baseline", "cbam"):
        card = dict(zoo.get_spec(base).card)
        for seed in (1, 2):
            torch.manual_seed(seed)
            net = models.build(card["architecture"], num_classes=len(card["class_names"]))
            name = f"{base}_seed{seed}"
            path = folder / f"{name}.safetensors"
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
            (folder / f"{name}.json").write_text(json.dumps({
                **card, "name": name, "replicate_of": base, "sha256": sha256_file(path),
                "recipe": {**card["recipe"], "torch_seed": seed}, "test_accuracy": 0.1}))
            names.append(name)
    return names


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """baseline + CBAM on 6 scenes with a sanity.json beside the results, then four replicates added by --update."""
    root = tmp_path_factory.mktemp("eval")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved = dict(zoo._specs)
    monkey = pytest.MonkeyPatch()
    monkey.setenv("ATTNVIZ_CACHE", str(root / "cache"))
    monkey.setattr(zoo, "REPLICATES_DIR", root / "replicates")
    names = _fake_replicates(root / "replicates")
    for spec in zoo.replicate_specs():
        zoo.register(spec, replace=True)
    out = root / "out"
    out.mkdir()
    (out / "sanity.json").write_text(json.dumps({"models": [{"model": "cbam", "maps": {
        "attention": {"spearman": [0.9, 0.8], "keeps_structure": True},
        "gradcam": {"spearman": [0.5, 0.1], "keeps_structure": False}}}]}))
    common = dict(n=6, methods=("gradcam", "layercam"), road_scenes=0, progress=False, faithfulness=False, out=out)
    first = evaluate.run_eval(["baseline", "cbam"], **common)
    result = evaluate.run_eval(names, update=True, **common)
    yield first, result, out, names
    torch.set_num_threads(threads)
    monkey.undo()
    zoo._specs.clear()
    zoo._specs.update(saved)
    for name in names:
        zoo._drop_cached(name)


def test_every_metric_has_a_bootstrap_ci_recomputable_from_results_json(evaluated):
    _, result, out, _ = evaluated
    stored = json.loads((out / "results.json").read_text())
    for row in stored["models"] + stored["replicates"]:
        assert row["maps"] and set(row["per_image"]) == {"correct", "values", "agreement"}
        for m, entry in row["maps"].items():
            for k, stat in entry.items():
                assert {"mean", "ci95", "n", "sem"} <= set(stat), (row["model"], m, k)
                values = [v for v in row["per_image"]["values"][m][k] if v is not None]
                again = stats.mean_ci(values)
                assert (stat["mean"], stat["ci95"], stat["n"]) == (again.mean, [again.lo, again.hi], again.n)
        acc = stats.mean_ci(row["per_image"]["correct"])
        assert (row["accuracy"], row["accuracy_ci95"]) == (acc.mean, [acc.lo, acc.hi])
    cbam = next(r for r in stored["models"] if r["model"] == "cbam")
    base = next(r for r in stored["models"] if r["model"] == "baseline")
    for m in ("gradcam", "layercam"):
        for k in ("pointing_game", "energy_pointing_game", "iou"):
            d = stats.paired_difference(cbam["per_image"]["values"][m][k], base["per_image"]["values"][m][k])
            assert cbam["vs_baseline"][m][k] == d.to_json(), (m, k)
    assert "vs_baseline" not in base and stored["reference"] == "baseline"
    md = (out / "results.md").read_text()
    epg = cbam["maps"]["gradcam"]["energy_pointing_game"]
    cell = f"{epg['mean'] * 100:.1f} [{epg['ci95'][0] * 100:.1f}, {epg['ci95'][1] * 100:.1f}]"
    assert "| CBAM | " in md and cell in md
    assert "## Difference from the baseline (paired, same images)" in md
    excluded = [(m, k) for m, d in cbam["vs_baseline"].items() if m != "accuracy" for k, v in d.items()
                if v["excludes_zero"]]
    assert md.count("◆") >= len(excluded) + 1    # every CI that excludes 0 is marked (plus the legend)
    assert (out / "results.png").stat().st_size > 10_000


def test_agreement_with_the_baselines_map_per_variant_and_method(evaluated):
    _, result, out, _ = evaluated
    cbam = next(r for r in result["models"] if r["model"] == "cbam")
    assert set(cbam["agreement"]) == {"gradcam", "layercam"}       # CAM methods only, not the own map
    scenes = cached_scenes(6, EVAL_SEED, synth.IMAGE_SIZE)
    i, label = 2, int(scenes.labels[2])
    mine, theirs = (explain(zoo.load(name, "cpu"), scenes.images[i], ("layercam",), target=label)
                    .cams["layercam"].heatmap for name in ("cbam", "baseline"))
    expected = map_agreement(mine, theirs)
    for k in ("spearman", "top20_iou", "peak_distance_pct"):
        assert cbam["per_image"]["agreement"]["layercam"][k][i] == pytest.approx(expected[k], abs=1e-4), k
        again = stats.mean_ci(cbam["per_image"]["agreement"]["layercam"][k])
        assert cbam["agreement"]["layercam"][k]["ci95"] == [again.lo, again.hi]
    assert "## Agreement with the `baseline` maps" in (out / "results.md").read_text()


def test_replicates_load_by_name_stay_off_the_page_and_get_the_seed_table(evaluated):
    from attnviz.app.web.choices import model_choices as _model_choices

    first, result, out, names = evaluated
    assert zoo.load("cbam_seed1", "cpu").spec.source == "replicate"
    assert not set(names) & set(zoo.bundled()) and not set(names) & {v for _, v in _model_choices()}
    assert [r["model"] for r in result["models"]] == ["baseline", "cbam"]      # --update kept the rows
    assert result["models"][1]["per_image"] == first["models"][1]["per_image"]
    assert sorted(r["model"] for r in result["replicates"]) == sorted(names)
    seeds = {e["model"]: e for e in result["across_seeds"]}
    assert set(seeds) == {"baseline", "cbam"} and seeds["cbam"]["seeds"] == [0, 1, 2]
    runs = {r["model"]: r for r in result["models"] + result["replicates"]}
    values = [runs[n]["maps"]["gradcam"]["energy_pointing_game"]["mean"] for n in ("cbam", "cbam_seed1", "cbam_seed2")]
    epg = seeds["cbam"]["maps"]["gradcam"]["energy_pointing_game"]
    assert epg["mean"] == pytest.approx(np.mean(values)) and epg["sd"] == pytest.approx(np.std(values, ddof=1))
    assert seeds["cbam"]["accuracy"]["values"] == [runs[n]["accuracy"] for n in ("cbam", "cbam_seed1", "cbam_seed2")]
    by_seed = seeds["cbam"]["minus_reference_by_seed"]["gradcam"]["energy_pointing_game"]
    assert by_seed["1"] == pytest.approx(runs["cbam_seed1"]["maps"]["gradcam"]["energy_pointing_game"]["mean"]
                                         - runs["baseline_seed1"]["maps"]["gradcam"]["energy_pointing_game"]["mean"])
    md = (out / "results.md").read_text()
    assert "## Across training seeds" in md
    assert f"{epg['mean'] * 100:.1f} ± {epg['sd'] * 100:.1f}" in md
    assert "Across training seeds 0, 1, 2: own − Grad-CAM EPG" in md     # the own-map finding checks the seeds
    # the paired table says, per cell, whether the sign of the difference holds in every seed
    mark = " ✓" if len({np.sign(v) for v in by_seed.values()}) == 1 else " ✗"
    row = next(ln for ln in md.splitlines() if ln.startswith("| CBAM | Grad-CAM |"))
    assert row.split(" | ")[4].endswith(mark)                               # the EPG column
    assert "keep their sign in every training seed" in md
    with pytest.raises(Exception, match="other settings \\(n\\)"):
        evaluate.run_eval(["se"], n=5, methods=("gradcam", "layercam"), road_scenes=0, progress=False,
                          faithfulness=False, out=out, update=True)


def test_sanity_flags_mark_the_map_with_a_footnote(evaluated):
    _, result, out, _ = evaluated
    assert read_sanity_flags(out / "sanity.json") == {("cbam", "attention"): 0.8}
    md = (out / "results.md").read_text()
    assert "| CBAM | " in md and "| attention ⚑ |" in md and "| Grad-CAM ⚑" not in md
    assert "⚑ The sanity check" in md and "cbam/attention (Spearman 0.80)" in md


def test_results_md_says_when_the_sanity_check_flagged_nothing(evaluated, tmp_path):
    _, result, out, _ = evaluated
    clean = {"models": [{"model": "cbam", "maps": {"attention": {"spearman": [0.9, 0.1], "keeps_structure": False}}}]}
    (tmp_path / "sanity.json").write_text(json.dumps(clean))
    assert read_sanity_flags(tmp_path / "sanity.json") == {}
    assert read_sanity_flags(tmp_path / "absent.json") is None
    eval_report.write_outputs(json.loads((out / "results.json").read_text()), tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "cover 1 of these 2 models and flag none of their maps" in md and "⚑" not in md
    (tmp_path / "sanity.json").unlink()
    eval_report.write_outputs(json.loads((out / "results.json").read_text()), tmp_path)
    assert "flag none" not in (tmp_path / "results.md").read_text()


def test_finding_sentences_carry_their_numbers(evaluated):
    _, result, out, _ = evaluated
    md = (out / "results.md").read_text()
    cbam = next(r for r in result["models"] if r["model"] == "cbam")
    own = cbam["maps"][OWN_MAP]["energy_pointing_game"]
    line = next(ln for ln in md.splitlines() if ln.startswith("* CBAM: own map EPG"))
    assert f"{own['mean'] * 100:.1f} [{own['ci95'][0] * 100:.1f}, {own['ci95'][1] * 100:.1f}] %" in line
    assert "By the paired EPG difference (CI excluding 0)" in md


# ---- torchrun ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_write_the_numbers_of_one_process(tmp_path):
    args = ["--n-images", "4", "--models", "baseline", "--methods", "gradcam", "--road", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTNVIZ_DEVICE": "cpu", "ATTNVIZ_DIST_TIMEOUT_S": "120"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                        "127.0.0.1", "--master-port", str(_free_port()), "-m", "attnviz", "eval", *args,
                        "--out", str(tmp_path / "two")], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert cli.main(["eval", *args, "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    for key in ("seconds", "processes", "machine", "command"):  # the command names its own --out
        two.pop(key), one.pop(key)
    assert_json_close(two, one, 1e-6)
    assert two["models"][0]["per_image"]["values"]["gradcam"]["road"][0] is not None


# ---- small pieces ---------------------------------------------------------------------------------------------

def test_a_mask_goes_through_the_models_resize_and_crop_like_its_image():
    """A red block on a 80x60 photo: after the model's resize (shorter side 72) and 64-px centre crop, the mask
    view marks the red pixels of the image view (edges may differ by the resampling)."""
    image = np.full((60, 80, 3), 40, np.uint8)
    image[10:40, 50:75] = (255, 0, 0)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 50:75] = True
    spec = zoo.random_spec("small_resnet", 11, input_size=64, resize_size=72)
    view = spec.model_view(image)
    mask_view = mask_for_view(mask, image.shape[:2], 64, 72)
    red = (view[..., 0] > 200) & (view[..., 1] < 50)
    assert mask_view.shape == (64, 64) and red.sum() > 300
    assert (red & mask_view).sum() / (red | mask_view).sum() > 0.9


def test_update_refuses_a_file_without_per_image_values(tmp_path):
    from attnviz.errors import AttnvizError

    old = json.loads((PROJECT_ROOT / "docs" / "results.json").read_text())
    old["models"] = [{k: v for k, v in old["models"][0].items() if k != "per_image"}]
    (tmp_path / "results.json").write_text(json.dumps(old))
    settings = {k: old.get(k) for k in evaluate.SETTINGS}
    with pytest.raises(AttnvizError, match="older attnviz without per-image values"):
        evaluate._previous(tmp_path, settings, list(range(old["n"])))
