"""Sanity checks (Adebayo et al. 2018): layer groups, cascading randomisation, random target, the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, count_hooks
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import models
from attnviz.core.methods import CATALOGUE as METHODS
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes
from attnviz.errors import AttnvizError
from attnviz.evaluation import sanity, sanity_checks
from attnviz.metrics.localisation import OWN_MAP
from attnviz.zoo import registry as zoo

ONE_PASS = [m for m, entry in METHODS.items() if entry.kind == "one-pass"]  # every one-pass method is checked by default
SMALL_STEPS = ["fc", "layer3.1", "layer3.0", "layer2.1", "layer2.0", "layer1.1", "layer1.0", "stem"]


@pytest.fixture(autouse=True)
def _private_scene_cache_and_one_thread(tmp_path, monkeypatch):
    """Scenes in a private cache; one torch thread, because these many one-image passes of a small model
    run several times faster without OpenMP's thread hand-offs on a shared two-core machine."""
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sanity_command_writes_json_in_the_documented_shape(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "attnviz", "sanity", "--models", "baseline", "--n", "8", "--out",
                        str(tmp_path / "out"), "--quiet"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "maps that keep their structure with every layer random:" in r.stderr
    result = json.loads((tmp_path / "out" / "sanity.json").read_text())
    assert (result["n"], result["seed"], result["methods"]) == (8, EVAL_SEED, ONE_PASS)
    (row,) = result["models"]
    assert row["model"] == "baseline" and row["steps"] == SMALL_STEPS
    assert set(row["maps"]) == set(ONE_PASS)          # the baseline has no attention module, so no own map
    for entry in row["maps"].values():
        assert entry["steps"] == SMALL_STEPS
        assert len(entry["spearman"]) == len(entry["ssim"]) == len(SMALL_STEPS)
        assert all(-1 <= v <= 1 for v in entry["spearman"] + entry["ssim"])
        assert entry["keeps_structure"] == (entry["spearman"][-1] > sanity_checks.FLAG_SPEARMAN)
    # Grad-CAM, XGrad-CAM and HiResCAM coincide at the last stage (GAP + linear head): same numbers
    assert row["maps"]["gradcam"]["spearman"] == pytest.approx(row["maps"]["hirescam"]["spearman"], abs=1e-5)
    # randomising the classifier alone already changes Grad-CAM (its channel weights come from fc)
    assert row["maps"]["gradcam"]["spearman"][0] < 0.9
    assert set(row["random_target"]) == set(ONE_PASS)
    md = (tmp_path / "out" / "sanity.md").read_text()
    assert "| map | `fc` | `layer3.1` |" in md and "| Grad-CAM |" in md and "Random target" in md
    assert (tmp_path / "out" / "sanity.png").stat().st_size > 10_000


def test_device_option_runs_on_the_named_device_and_refuses_an_absent_one(tmp_path):
    from attnviz.app import cli

    assert cli.main(["sanity", "--models", "baseline", "--n", "2", "--device", "cuda:7", "--quiet",
                     "--out", str(tmp_path / "gpu")]) == 2          # no such device here: one line, exit 2
    assert not (tmp_path / "gpu").exists()
    x = zoo.load("cbam", "cpu").spec.preprocess(cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE).images)
    default = sanity_checks.sanity_model(zoo.load("cbam", "cpu"), x, [0, 1], ["gradcam"], layer="layer3",
                                  class_names=synth.CLASS_NAMES)
    on_cpu = sanity_checks.sanity_model(zoo.load("cbam", "cpu"), x, [0, 1], ["gradcam"], layer="layer3",
                                 class_names=synth.CLASS_NAMES, device="cpu")
    assert on_cpu["maps"] == default["maps"] and on_cpu["random_target"] == default["random_target"]


@pytest.mark.parametrize("arch, expected", [
    ("small_resnet", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "fc"]),
    ("small_resnet_cbam", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "fc"]),
    ("small_resnet_bam", ["stem", "layer1.0", "layer1.1", "bam1", "layer2.0", "layer2.1", "bam2", "layer3.0",
                          "layer3.1", "fc"]),
    ("small_resnet_nonlocal", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "nl2", "layer3.0",
                               "layer3.1", "fc"]),
    ("small_resnet_cc", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "cc3",
                         "fc"]),
    ("small_resnet_danet", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                            "danet3", "fc"]),
    ("small_resnet_stn", ["stn", "stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                          "fc"]),
    ("small_resnet_mhsa", ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "fc"]),
    ("resnet50", ["stem"] + [f"layer{s}.{b}" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)]
     + ["fc"]),
])
def test_layer_groups_follow_execution_order_and_cover_every_parameter(arch, expected):
    model = models.build(arch, num_classes=11).eval()
    size = 224 if arch == "resnet50" else 128
    groups = sanity_checks.layer_groups(model, torch.randn(1, 3, size, size))
    assert [g.name for g in groups] == expected
    covered = [p for g in groups for name in g.modules
               for p in (model.get_submodule(name) if name else model).parameters(recurse=False)]
    assert len(covered) == len({id(p) for p in covered}) == len(list(model.parameters()))
    assert count_hooks(model) == 0


def test_cascading_randomisation_changes_one_more_group_per_step_and_leaves_the_model_alone():
    loaded = zoo.load("bam")
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = sanity_checks.layer_groups(model, torch.randn(1, 3, 128, 128))
    params_of = {g.name: [(f"{m}.{n}" if m else n) for m in g.modules
                          for n, _ in (model.get_submodule(m) if m else model).named_parameters(recurse=False)]
                 for g in groups}
    original = dict(model.named_parameters())
    steps = []
    for step, randomised in sanity_checks.cascading_randomisation(model, groups, seed=0):
        steps.append(step)
        assert randomised is not model
        now = dict(randomised.named_parameters())
        for g in groups:
            for name in params_of[g.name]:
                same = torch.equal(now[name], original[name])
                assert same == (g.name not in steps), (step, name)   # randomised so far: changed; the rest: intact
        # BatchNorm statistics of randomised groups are fresh, the others are the trained ones
        bn = dict(randomised.named_buffers())
        assert torch.equal(bn["bn1.running_mean"], before["bn1.running_mean"]) == ("stem" not in steps)
        assert torch.equal(bn["layer3.1.bn2.running_var"], before["layer3.1.bn2.running_var"]) == (
            "layer3.1" not in steps)
    assert steps == [g.name for g in reversed(groups)] and steps[0] == "fc" and steps[-1] == "stem"
    assert "bam1" in steps and steps.index("layer2.0") < steps.index("bam1") < steps.index("layer1.1")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_hooks(model) == 0
    # a fixed seed gives the same randomised weights every time, and the global RNG is left alone
    state = torch.random.get_rng_state()
    first = next(iter(sanity_checks.cascading_randomisation(model, groups, seed=0)))[1].fc.weight.detach().clone()
    again = next(iter(sanity_checks.cascading_randomisation(model, groups, seed=0)))[1].fc.weight
    other = next(iter(sanity_checks.cascading_randomisation(model, groups, seed=1)))[1].fc.weight
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_random_targets_are_other_classes_and_reproducible():
    labels = [0, 3, 10, 5] * 50
    targets = sanity_checks.random_targets(labels, 11, seed=0)
    assert all(t != y and 0 <= t < 11 for t, y in zip(targets, labels))
    assert set(targets) == set(range(11))                      # every class can be drawn
    assert sanity_checks.random_targets(labels, 11, seed=0) == targets
    assert sanity_checks.random_targets(labels, 11, seed=1) != targets


def test_random_target_test_moves_cams_but_not_the_modules_own_map():
    loaded = zoo.load("cbam")
    scenes = cached_scenes(3, EVAL_SEED, synth.IMAGE_SIZE)
    x = loaded.spec.preprocess(scenes.images)
    labels = [int(v) for v in scenes.labels]
    names = loaded.spec.class_names
    true = sanity_checks.compute_maps(loaded, x, labels, ["gradcam"], "layer3", names)
    other = sanity_checks.compute_maps(loaded, x, sanity_checks.random_targets(labels, len(names)), ["gradcam"], "layer3", names)
    assert set(true) == {"gradcam", OWN_MAP} and true["gradcam"].shape == true[OWN_MAP].shape == (3, 128, 128)
    assert np.array_equal(true[OWN_MAP], other[OWN_MAP])      # gates run before any class is chosen
    assert not np.allclose(true["gradcam"], other["gradcam"])
    result = sanity_checks.sanity_model(loaded, x[:2], labels[:2], ["gradcam"], layer="layer3", class_names=names,
                                 name="cbam")
    assert result["random_target"][OWN_MAP] == {"spearman": 1.0, "ssim": 1.0, "class_insensitive": True}
    assert result["random_target"]["gradcam"]["spearman"] < 1.0
    assert result["steps"][0] == "fc" and result["steps"][-1] == "stem"
    # randomising only the classifier cannot change the gates, which run before it
    assert result["maps"][OWN_MAP]["spearman"][0] == pytest.approx(1.0)
    assert count_hooks(loaded.model) == 0


def test_a_map_that_ignores_the_weights_is_flagged(monkeypatch):
    """The flag rule on maps computed without the model (an edge detector) and on maps that are pure noise."""
    loaded = zoo.load("baseline")
    x = loaded.spec.preprocess(cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE).images)
    calls = {"n": 0}

    def fake_maps(model, images, targets, methods, layer, class_names, device=None):
        calls["n"] += 1
        grey = images.mean(1).numpy()
        edges = np.abs(np.gradient(grey, axis=-1)) + np.abs(np.gradient(grey, axis=-2))
        noise = np.random.default_rng(calls["n"]).random(edges.shape)
        return {"edges": edges.astype(np.float32), "noise": noise.astype(np.float32)}

    monkeypatch.setattr(sanity_checks, "compute_maps", fake_maps)
    result = sanity_checks.sanity_model(loaded, x, [0, 1], ["gradcam"], layer="layer3", class_names=loaded.spec.class_names)
    assert result["maps"]["edges"]["keeps_structure"] and result["maps"]["edges"]["spearman"][-1] == 1.0
    assert not result["maps"]["noise"]["keeps_structure"] and abs(result["maps"]["noise"]["spearman"][-1]) < 0.1


def test_rank_correlation_matches_scipy_and_ssim_is_scale_free():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    b = a + rng.normal(0, 0.3, a.shape)
    tied_a, tied_b = np.maximum(a - 0.6, 0), np.round(b, 1)      # many ties, as in ReLU'd CAMs
    for p, q in ((a, b), (tied_a, tied_b), (a, -a)):
        assert sanity_checks.spearman(p, q) == pytest.approx(spearmanr(p.ravel(), q.ravel()).statistic, abs=1e-12)
    assert sanity_checks.spearman(a, np.zeros_like(a)) == 0.0              # undefined for a constant map: counted as 0
    assert sanity_checks.ssim(a, a * 5 + 2) == pytest.approx(1.0)           # min-max scaling before SSIM
    unit = lambda m: (m - m.min()) / (m.max() - m.min())  # noqa: E731
    assert sanity_checks.ssim(a, b) == pytest.approx(structural_similarity(unit(a), unit(b), data_range=1.0))


def test_maps_come_from_one_batched_pass_equal_to_one_image_at_a_time():
    from attnviz.api import explain

    loaded = zoo.load("cbam", "cpu")
    scenes = cached_scenes(3, EVAL_SEED, synth.IMAGE_SIZE)
    x = loaded.spec.preprocess(scenes.images)
    labels = [int(v) for v in scenes.labels]
    maps = sanity_checks.compute_maps(loaded, x, labels, ("gradcam", "layercam"), "layer3", loaded.spec.class_names)
    assert set(maps) == {"gradcam", "layercam", OWN_MAP} and maps["gradcam"].shape == (3, 128, 128)
    for i in range(3):
        e = explain(loaded, x[i:i + 1], ("gradcam", "layercam"), target=labels[i], layer="layer3")
        for m in ("gradcam", "layercam"):
            np.testing.assert_allclose(maps[m][i], e.cams[m].heatmap, atol=1e-5)


def test_findings_table_is_computed_from_the_result():
    def row(model, first, last, target, flag=False, blind=False):
        return {"model": model, "maps": {"gradcam": {"steps": ["fc", "stem"], "spearman": [first, last],
                                                      "ssim": [0.5, 0.5], "keeps_structure": flag}},
                "random_target": {"gradcam": {"spearman": target, "ssim": 0.4, "class_insensitive": blind}}}

    result = {"models": [row("a", 0.2, 0.1, 0.95, blind=True), row("b", 0.4, 0.7, 0.91, flag=True, blind=True),
                         row("c", 0.3, 0.1, 0.2)]}
    text = "\n".join(sanity.sanity_findings(result))
    assert "| Grad-CAM (3 models) | 0.30 (models 0.20 to 0.40) | 0.30 (models 0.10 to 0.70) | " \
           "0.69 (models 0.20 to 0.95) | 1 | 2 |" in text
    assert ("* Grad-CAM: with every layer random its correlation drops (0.30); with only the classifier "
            "re-initialised it is 0.30, and a random target class gives 0.69.") in text
    assert "b/gradcam" in text


def test_the_baselines_randomcam_and_sobelcam_are_flagged_and_gradcam_is_not():
    """The sanity checks on two maps that cannot explain a class: SobelCAM (edges of the image; no model) and
    RandomCAM (random channel weights, the same draw for every class). Both come out class-insensitive, and
    SobelCAM keeps its structure when every layer is random; Grad-CAM on the same images is neither."""
    loaded = zoo.load("baseline")
    scenes = cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE)
    x = loaded.spec.preprocess(scenes.images)
    result = sanity_checks.sanity_model(loaded, x, [int(v) for v in scenes.labels], ["randomcam", "sobelcam", "gradcam"],
                                        layer="layer3", class_names=loaded.spec.class_names)
    blind = {m: result["random_target"][m]["class_insensitive"] for m in ("randomcam", "sobelcam", "gradcam")}
    assert blind == {"randomcam": True, "sobelcam": True, "gradcam": False}
    assert result["maps"]["sobelcam"]["keeps_structure"]
    assert result["maps"]["sobelcam"]["spearman"][-1] == pytest.approx(1.0)
    assert not result["maps"]["gradcam"]["keeps_structure"]


def test_a_transformer_only_method_runs_on_the_vit_and_is_left_out_of_the_cnns_row(tmp_path):
    """Mixed kinds (issue 30's applicability rule, as on the page): LeGrad needs a ViT, so the baseline's row has
    Grad-CAM only and says why LeGrad is missing; the ViT's row has both. Asking for LeGrad on CNNs alone is one
    error before any scene is drawn."""
    result = sanity.run_sanity(["baseline", "vit"], n=2, methods=["gradcam", "legrad"], out=tmp_path / "out",
                               progress=False, device="cpu")
    baseline, vit = result["models"]
    assert set(baseline["maps"]) == {"gradcam"} and "ViT" in baseline["unavailable"]["legrad"]
    assert {"gradcam", "legrad"} <= set(vit["maps"]) and vit["unavailable"] == {}
    assert "LeGrad" in (tmp_path / "out" / "sanity.md").read_text()
    with pytest.raises(AttnvizError, match="cannot run on any of the selected models"):
        sanity.run_sanity(["baseline"], n=2, methods=["legrad"], out=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
