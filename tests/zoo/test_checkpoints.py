"""Bring-your-own checkpoints and ImageNet sources: strict loading, readable diffs, refusing code, offline."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import count_hooks
from safetensors.torch import load_file, save_file
from test_models_official import OFFICIAL_FACTS
from webapp import serve_one_file

import models
from attnviz.api import explain
from attnviz.app import cli
from attnviz.errors import AttnvizError, CheckpointError, WeightsUnavailableError
from attnviz.zoo import checkpoints, files, imagenet
from attnviz.zoo import registry as zoo

SCENE = sorted(p for p in (Path(__file__).resolve().parents[2] / "attnviz" / "assets" / "examples").glob("*.png")
               if not p.name.endswith("_mask.png"))[0]


def _random_state(name: str, seed: int = 0, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = models.build(name, num_classes=num_classes)
    for m in model.modules():  # non-trivial BN statistics, so a wrong load would change the logits
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def _official_file(tmp_path: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    """What a released checkpoint looks like: {'state_dict': {'module.' + key: tensor}}, saved with torch.save."""
    path = tmp_path / f"{name}_release.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 90, "best_prec1": 77.1}, path)
    return path


@pytest.mark.parametrize("name", sorted(OFFICIAL_FACTS))
def test_official_release_layout_loads_through_the_cli_with_the_same_logits(tmp_path, name):
    state = _random_state(name)
    ckpt = _official_file(tmp_path, name, state)
    out = tmp_path / "out"
    code = cli.main(["explain", str(SCENE), "--arch", name, "--checkpoint", str(ckpt), "--out", str(out),
                     "--methods", "gradcam", "--npz", "--quiet"])
    assert code == 0
    reference = models.build(name).eval()
    reference.load_state_dict(state, strict=True)
    spec = zoo.get_spec(f"{name}@{ckpt.stem}")
    from attnviz.data.images import decode_image

    x = spec.preprocess(decode_image(SCENE))
    with torch.no_grad():
        expected = reference(x)[0].numpy()
    with np.load(out / f"{SCENE.stem}_maps.npz") as z:
        got = z[f"{spec.name}/logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    report = json.loads((out / f"{SCENE.stem}.json").read_text())
    assert report["models"][0]["predictions"][0]["index"] == int(expected.argmax())


def test_mismatch_gives_a_readable_diff_and_names_the_right_architecture(tmp_path):
    path = _official_file(tmp_path, "cbam_resnet50", _random_state("cbam_resnet50"))
    with pytest.raises(CheckpointError) as info:
        checkpoints.checkpoint_spec("se_resnet50", path)
    message = str(info.value)
    # issue 21: the suggestion leads, the key lists follow
    assert message.startswith("Choose cbam_resnet50: this looks like a CBAM checkpoint (key overlap 100%), "
                              "not se_resnet50. Details: ")
    assert "missing key(s): layer1.0.se.fc.0.weight" in message
    assert "unexpected key(s): layer1.0.cbam.ChannelGate.mlp.1.bias" in message


def test_shape_mismatch_is_listed(tmp_path):
    state = _random_state("eca_resnet50")
    state["layer1.0.eca.conv.weight"] = torch.zeros(1, 1, 5)
    path = tmp_path / "eca.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*layer1.0.eca.conv.weight \(1, 1, 5\) vs \(1, 1, 3\)"):
        checkpoints.checkpoint_spec("eca_resnet50", path)


def test_class_count_is_inferred_and_class_files_are_read(tmp_path):
    state = _random_state("small_resnet_cbam", num_classes=4)
    path = tmp_path / "four.safetensors"
    save_file(state, str(path))
    (tmp_path / "c.txt").write_text("apple\nbanana\n\ncherry\ndate\n")
    spec = checkpoints.checkpoint_spec("small_resnet_cbam", path, tmp_path / "c.txt")
    assert spec.class_names == ("apple", "banana", "cherry", "date") and spec.input_size == 128
    (tmp_path / "c.json").write_text(json.dumps({"1": "b", "0": "a", "2": "c", "3": "d"}))
    assert checkpoints.checkpoint_spec("small_resnet_cbam", path, tmp_path / "c.json").class_names == ("a", "b", "c", "d")
    (tmp_path / "bad.txt").write_text("one\ntwo\n")
    with pytest.raises(CheckpointError, match="lists 2 names but the checkpoint has 4 classes"):
        checkpoints.checkpoint_spec("small_resnet_cbam", path, tmp_path / "bad.txt")


def test_convert_to_safetensors_round_trip(tmp_path):
    state = _random_state("triplet_mobilenet_v2")
    path = _official_file(tmp_path, "triplet_mobilenet_v2", state)
    code = cli.main(["checkpoint", "convert", str(path), "--arch", "triplet_mobilenet_v2", "--out",
                     str(tmp_path / "t.safetensors")])
    assert code == 0
    converted = load_file(str(tmp_path / "t.safetensors"))
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)


# ---- ImageNet sources ---------------------------------------------------------------------------

def test_imagenet_models_are_listed_but_not_loadable_until_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    assert "tv-resnet50" in {s.name for s in zoo.all_specs()}
    spec = imagenet.spec_for(imagenet.SOURCES_BY_NAME["tv-resnet50"])
    assert not spec.weights.available() and len(spec.class_names) == 1000
    assert spec.class_names[207] == "golden retriever"
    with pytest.raises(WeightsUnavailableError, match=r"not downloaded — run `attnviz weights download tv-resnet50`"):
        zoo.load(spec)


@pytest.mark.parametrize("name", [s.name for s in imagenet.SOURCES if s.attention not in ("vit", "swin")])
def test_imagenet_architectures_with_random_weights_load_from_the_cache_and_record_their_gates(
        tmp_path, monkeypatch, name):
    """A file placed where the downloader puts it (here: random weights) makes the model available."""
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    src = imagenet.SOURCES_BY_NAME[name]
    torch.manual_seed(0)
    net = imagenet.build_network(src)
    src.path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), src.path)
    spec = imagenet.spec_for(src)
    assert spec.weights.available()
    e = explain(spec, np.full((240, 300, 3), 120, np.uint8), methods=("gradcam",))
    assert e.cams["gradcam"].heatmap.shape == (src.crop, src.crop)
    kinds = {m.attention for m in e.attention_maps}
    assert kinds == ({src.attention} if src.attention != "none" else set())
    loaded = zoo.load(spec)
    assert count_hooks(loaded.model) == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(torch.ones(1, 3, 64, 64)), net.eval()(torch.ones(1, 3, 64, 64)))


def test_download_verifies_the_published_hash_prefix(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    payload = buf.getvalue()
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    good = imagenet.ImageNetSource("test-good", "t", "torchvision", "resnet18", f"http://x/model-{prefix}.pth",
                                   "none", ("layer4",))
    bad = imagenet.ImageNetSource("test-bad", "t", "torchvision", "resnet18", "http://x/model-00000000.pth",
                                  "none", ("layer4",))
    server = serve_one_file(payload)
    url = f"http://127.0.0.1:{server.server_address[1]}/file"
    try:
        path = imagenet.download(good, progress=False, url=url)
        assert path.read_bytes() == payload and path.parent == tmp_path / "torchvision"
        with pytest.raises(AttnvizError, match="does not start with the published 00000000"):
            imagenet.download(bad, progress=False, url=url)
        assert not bad.path.exists() and not list(bad.path.parent.glob("*.part"))
    finally:
        server.shutdown()
    with pytest.raises(AttnvizError, match="Could not download test-bad"):
        imagenet.download(bad, progress=False, url="http://127.0.0.1:9/nothing")


def test_weights_cli_lists_and_rejects_unknown_names(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tv-resnet50" in out and "not downloaded" in out and str(tmp_path) in out
    assert cli.main(["weights", "download", "resnet9000"]) == 2
    assert "Unknown ImageNet model 'resnet9000'" in capsys.readouterr().err


def test_zip_checkpoint_is_not_mistaken_for_torchscript(tmp_path):
    """torch.save writes a zip too; only archives with code/ or constants.pkl are TorchScript."""
    path = tmp_path / "plain.pth"
    torch.save({"a": torch.zeros(1)}, path)
    assert zipfile.is_zipfile(path) and not files._is_torchscript(path)
    assert set(checkpoints.read_checkpoint(path)) == {"a"}


def test_official_release_loads_through_the_page_handlers_with_the_same_logits(tmp_path):
    """The page's "Load checkpoint" handler, then its /compare handler, on a released-layout file."""
    from attnviz.app.web import handlers as ui

    name = "cbam_resnet50"
    state = _random_state(name, seed=1)
    ckpt = _official_file(tmp_path, name, state)
    update, message, session = ui.on_load_checkpoint(str(ckpt), name, None, ["baseline"])
    loaded_name = f"{name}@{ckpt.stem}"
    assert loaded_name in update["value"] and "strict key match" in message and ckpt.name in message
    _, _, report = ui.api_compare(str(SCENE), loaded_name, "gradcam", session=session)
    reference = models.build(name).eval()
    reference.load_state_dict(state, strict=True)
    from attnviz.data.images import decode_image

    with torch.no_grad():
        expected = reference(session.specs[loaded_name].preprocess(decode_image(SCENE)))[0].numpy()
    session.release()
    got = np.asarray(report["models"][0]["logits"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_the_page_refuses_a_checkpoint_for_the_wrong_architecture(tmp_path):
    from attnviz.app.web import handlers as ui

    ckpt = _official_file(tmp_path, "se_resnet50", _random_state("se_resnet50"))
    models_update, status, _ = ui.on_load_checkpoint(str(ckpt), "cbam_resnet50", None, [])
    # the refusal stays in the checkpoint status area (not a toast), the suggestion first, the key lists after
    text = status.split("**Not loaded.**", 1)[1].strip()
    assert text.startswith("Choose se_resnet50: this looks like a SE checkpoint")
    assert "not cbam_resnet50" in text and text.index("Choose se_resnet50") < text.index("missing key(s)")
