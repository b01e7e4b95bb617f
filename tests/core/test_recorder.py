"""The attention recorder: documented maps for every attention type, correct values, no leaked hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import count_hooks

import models
from attnviz.core.recording.adapters import ADAPTERS
from attnviz.core.recording.recorder import record_attention, stage_summaries
from models.attention import ATTENTION_TYPES

# compact model at 128 px: stages layer1/2/3 have C = 32/64/128 at 32x32, 16x16, 8x8
STAGES = {"layer1": (32, 32), "layer2": (64, 16), "layer3": (128, 8)}

AFF = ("affinity", lambda c, s: (s, s, s, s))
SUB = ("affinity", lambda c, s: (s, s, s // 2, s // 2))  # Non-local keys are 2x2 max-pooled
SPATIAL = ("spatial", lambda c, s: (s, s))
ATTENDED_SUB = ("spatial", lambda c, s: (s // 2, s // 2))

EXPECTED = {  # map name -> (layout, shape as a function of (C, S))
    "se": {"channel": ("channel", lambda c, s: (c,))},
    "eca": {"channel": ("channel", lambda c, s: (c,))},
    "cbam": {"channel": ("channel", lambda c, s: (c,)), "spatial": ("spatial", lambda c, s: (s, s))},
    "triplet": {"branch C-W": ("matrix", lambda c, s: (c, s)), "branch H-C": ("matrix", lambda c, s: (s, c)),
                "branch C-W on HxW": ("spatial", lambda c, s: (s, s)),
                "branch H-C on HxW": ("spatial", lambda c, s: (s, s)),
                "branch H-W": ("spatial", lambda c, s: (s, s)), "mean": ("spatial", lambda c, s: (s, s))},
    "coord": {"h_profile": ("profile_h", lambda c, s: (s,)), "w_profile": ("profile_w", lambda c, s: (s,)),
              "a_h": ("matrix", lambda c, s: (c, s)), "a_w": ("matrix", lambda c, s: (c, s)),
              "ca_product": ("spatial", lambda c, s: (s, s))},
    "bam": {"channel": ("channel", lambda c, s: (c,)), "spatial": SPATIAL, "attention": SPATIAL},
    "nonlocal": {"affinity": SUB, "attended (mean over queries)": ATTENDED_SUB},
    "gc": {"context": SPATIAL},
    "cc": {"step 1 criss-cross": AFF, "step 2 criss-cross": AFF, "2-step reach": AFF,
           "attended (mean over queries)": SPATIAL},
    "danet": {"position attention": AFF, "attended (mean over queries)": SPATIAL,
              "channel affinity": ("matrix", lambda c, s: (c, c))},
    "mhsa": {**{f"head {i}": AFF for i in (1, 2, 3, 4)}, "mean of heads": AFF, "attended (mean over queries)": SPATIAL},
    "stn": {"sampled region": ("affine", lambda c, s: (2, 3))},
}

BLOCKS = {  # where each type's modules are in the compact model
    **{k: {f"layer{s}.{b}.{ATTENTION_TYPES[k].block_attr}" for s in (1, 2, 3) for b in (0, 1)}
       for k in ("se", "eca", "cbam", "triplet", "coord", "gc")},
    "bam": {"bam1", "bam2"},
    "nonlocal": {"nl2"},
    "cc": {"cc3"},
    "danet": {"danet3"},
    "mhsa": {"layer3.0.conv2", "layer3.1.conv2"},
    "stn": {"stn"},
}
UNBOUNDED = {"channel affinity"}


def _record(kind: str):
    torch.manual_seed(0)
    model = models.build(f"small_resnet_{kind}", num_classes=11).eval()
    x = torch.randn(1, 3, 128, 128)
    with record_attention(model) as rec, torch.no_grad():
        model(x)
    return model, x, rec.maps()


def test_every_attention_type_has_an_adapter_and_expectations():
    covered = {a.attention for a in ADAPTERS}
    assert set(ATTENTION_TYPES) <= covered
    assert set(EXPECTED) == set(ATTENTION_TYPES)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_recorder_returns_documented_maps_with_shapes(kind):
    model, _, maps = _record(kind)
    blocks = {m.block for m in maps}
    assert blocks == BLOCKS[kind]
    for m in maps:
        if kind == "stn":
            assert m.stage == "input" and m.data.shape == (2, 3) and m.layout == "affine"
            continue
        c, s = STAGES[m.stage]
        layout, shape = EXPECTED[kind][m.name]
        assert (m.layout, m.data.shape, m.data.dtype) == (layout, shape(c, s), np.float32), m.label
        assert m.block.startswith(m.stage + ".") or m.block[-1] == m.stage[-1]
        if m.name not in UNBOUNDED:
            assert np.all((m.data >= 0) & (m.data <= 1 + 1e-6)), m.label  # sigmoid/softmax outputs or their means
    names_per_block = {b: sorted(m.name for m in maps if m.block == b) for b in blocks}
    assert all(names == sorted(EXPECTED[kind]) for names in names_per_block.values())
    assert count_hooks(model) == 0


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_stage_summaries_average_blocks(kind):
    _, _, maps = _record(kind)
    from attnviz.core.recording.recorder import SUMMARY_SPATIAL

    summaries = stage_summaries(maps)
    assert {s.stage for s in summaries} == {m.stage for m in maps if m.layout in ("spatial", "channel")}
    for s in summaries:
        c, size = STAGES[s.stage]
        if s.layout == "spatial":
            blocks = [m.data for m in maps if m.stage == s.stage and m.name == SUMMARY_SPATIAL[kind]]
            np.testing.assert_allclose(s.data, np.mean(blocks, axis=0), rtol=1e-6)
        else:
            assert s.layout == "channel" and s.data.shape == (c,)
    has_spatial = {s.stage for s in summaries if s.layout == "spatial"}
    assert bool(has_spatial) == (kind not in ("se", "eca", "stn"))


def test_coordinate_attention_product_and_profiles_match_the_gates():
    model, x, maps = _record("coord")
    ca = model.layer2[1].ca
    got = {}
    handles = [ca.gate_h.register_forward_hook(lambda m, i, o: got.__setitem__("h", o[0].clone())),
               ca.gate_w.register_forward_hook(lambda m, i, o: got.__setitem__("w", o[0].clone()))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    a_h, a_w = got["h"][:, :, 0].numpy(), got["w"][:, 0, :].numpy()  # (C, H), (C, W)
    by_name = {m.name: m.data for m in maps if m.block == "layer2.1.ca"}
    np.testing.assert_allclose(by_name["ca_product"], (a_h[:, :, None] * a_w[:, None, :]).mean(0), rtol=1e-5)
    np.testing.assert_allclose(by_name["h_profile"], a_h.mean(0), rtol=1e-6)
    np.testing.assert_allclose(by_name["w_profile"], a_w.mean(0), rtol=1e-6)


def test_triplet_mean_is_the_channel_averaged_effective_weight():
    model, x, maps = _record("triplet")
    ta = model.layer3[0].triplet_attention
    got = {}
    gates = {"cw": ta.ChannelGateH.gate, "hc": ta.ChannelGateW.gate, "hw": ta.SpatialGate.gate}
    handles = [g.register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, o[0, 0].clone())) for k, g in gates.items()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    cw, hc, hw = got["cw"].numpy(), got["hc"].numpy(), got["hw"].numpy()  # (C,W), (H,C), (H,W)
    # out[c,h,w] = x[c,h,w] * (cw[c,w] + hc[h,c] + hw[h,w]) / 3 ; average the weight over c
    effective = (cw[:, None, :] + hc.T[:, :, None] + hw[None]) / 3  # (C, H, W)
    by_name = {m.name: m.data for m in maps if m.block == "layer3.0.triplet_attention"}
    np.testing.assert_allclose(by_name["mean"], effective.mean(0), rtol=1e-5)
    np.testing.assert_allclose(by_name["branch H-W"], hw, rtol=1e-6)


def test_hooks_are_removed_after_an_exception_inside_the_context():
    model = models.build("small_resnet_triplet", num_classes=11).eval()
    with pytest.raises(ValueError):
        with record_attention(model) as rec:
            assert count_hooks(model) == 6 * (3 + 1)  # 6 blocks x (3 gates + 1 input-shape probe)
            model(torch.randn(1, 3, 128, 128))
            raise ValueError("user code failed mid-way")
    assert count_hooks(model) == 0
    assert rec.maps()  # what was recorded before the failure is still readable
