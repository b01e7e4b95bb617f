"""Official-checkpoint compatibility: keys, shapes and parameter counts equal the official code's.

The full key lists come from ``../shared/reference/official_state_dicts.json`` when it exists; the
facts below (key count, parameter count, digest of the sorted ``key:shape`` list) were taken from
that file so the suite checks the same thing without it.
"""
from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
from conftest import REFERENCE_JSON

import models

# name -> (number of state-dict entries, number of parameters, sha256[:16] of sorted "key:shape" lines)
OFFICIAL_FACTS = {
    "triplet_resnet50": (608, 25561832, "878a1119b2d2957c"),
    "triplet_mobilenet_v2": (620, 3509972, "d5def753b301c611"),
    "cbam_resnet50": (480, 28089624, "46e7759afe16a8df"),
    "resnet50_baseline_jongchan": (320, 25557032, "6fe9bb6b0c0b0114"),
    "se_resnet50": (352, 28071976, "15c67dcf88a14b19"),
    "eca_resnet50": (336, 25557112, "18bfaba5c14bc1cf"),
    "ca_mobilenet_v2": (490, 3950648, "283ccf614e08a19e"),
}


def _shape_table(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _digest(table: dict[str, list[int]]) -> str:
    lines = "\n".join(f"{k}:{','.join(map(str, s))}" for k, s in sorted(table.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    return {name: models.build(name) for name in OFFICIAL_FACTS}


@pytest.mark.parametrize("name", sorted(OFFICIAL_FACTS))
def test_keys_shapes_and_param_count_match_embedded_facts(built, name):
    n_keys, n_params, digest = OFFICIAL_FACTS[name]
    table = _shape_table(built[name])
    assert len(table) == n_keys
    assert sum(p.numel() for p in built[name].parameters()) == n_params
    assert _digest(table) == digest


@pytest.mark.skipif(not REFERENCE_JSON.exists(), reason="../shared/reference is not beside this checkout")
@pytest.mark.parametrize("name", sorted(OFFICIAL_FACTS))
def test_keys_and_shapes_equal_reference_json(built, name):
    ref = json.loads(REFERENCE_JSON.read_text())[name]
    table = _shape_table(built[name])
    missing = sorted(set(ref["keys"]) - set(table))
    unexpected = sorted(set(table) - set(ref["keys"]))
    wrong = sorted(k for k in table if k in ref["keys"] and table[k] != ref["keys"][k])
    assert (missing, unexpected, wrong) == ([], [], [])
    assert sum(p.numel() for p in built[name].parameters()) == ref["num_params"]


def test_eca_resnet50_uses_released_kernel_sizes_and_adaptive_rule_is_selectable():
    default = models.build("eca_resnet50")
    ks = [default.get_submodule(f"layer{i}.0.eca.conv").kernel_size[0] for i in range(1, 5)]
    assert ks == [3, 5, 5, 7]
    adaptive = models.build("eca_resnet50", k_sizes="adaptive")
    ks = [adaptive.get_submodule(f"layer{i}.0.eca.conv").kernel_size[0] for i in range(1, 5)]
    # k = |(log2 C + 1) / 2|_odd for C = 256, 512, 1024, 2048
    assert ks == [5, 5, 5, 7]


def test_ca_mobilenet_places_attention_only_where_expand_ratio_is_not_one():
    model = models.build("ca_mobilenet_v2")
    has_ca = ["CoordAtt" in {type(m).__name__ for m in block.conv} for block in model.features[1:]]
    assert has_ca == [False] + [True] * 16
    block = model.features[2].conv
    assert [type(m).__name__ for m in block] == [
        "Conv2d", "BatchNorm2d", "ReLU6", "Conv2d", "BatchNorm2d", "ReLU6", "CoordAtt", "Conv2d", "BatchNorm2d"]


def test_triplet_mobilenet_places_attention_after_projection_bn_everywhere():
    model = models.build("triplet_mobilenet_v2")
    for block in model.features[1:18]:
        assert type(block.conv[-1]).__name__ == "TripletAttention"
        assert type(block.conv[-2]).__name__ == "BatchNorm2d"


@pytest.mark.parametrize("name", ["cbam_resnet50", "ca_mobilenet_v2"])
def test_released_checkpoint_round_trip_loads_strictly_and_gives_same_logits(name):
    torch.manual_seed(0)
    source = models.build(name).eval()
    wrapped = {"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "epoch": 90}
    buf = io.BytesIO()
    torch.save(wrapped, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    target = models.build(name).eval()
    target.load_state_dict(models.unwrap_state_dict(loaded), strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_unwrap_handles_bare_model_and_nested_forms():
    t = torch.zeros(2)
    assert models.unwrap_state_dict({"a.weight": t}) == {"a.weight": t}
    assert models.unwrap_state_dict({"model": {"module.a.weight": t}}) == {"a.weight": t}
    assert models.unwrap_state_dict({"state_dict": {"module.a": t, "module.b": t}, "arch": "x"}) == {"a": t, "b": t}
    assert models.unwrap_state_dict({"a": t, "epoch": 3}) == {"a": t}
    with pytest.raises(ValueError, match="no tensors"):
        models.unwrap_state_dict({"epoch": 3})
    with pytest.raises(ValueError, match="no state dict"):
        models.unwrap_state_dict([t])


def test_registry_lists_required_names_and_rejects_unknown():
    required = {"resnet50", "se_resnet50", "eca_resnet50", "cbam_resnet50", "triplet_resnet50",
                "ca_mobilenet_v2", "triplet_mobilenet_v2", "mobilenet_v2", "small_resnet"}
    assert required <= set(models.available())
    with pytest.raises(KeyError, match="unknown architecture"):
        models.build("resnet51")
