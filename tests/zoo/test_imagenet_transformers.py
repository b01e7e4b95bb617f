"""ImageNet ViT-S/16, DeiT-S and Swin-T sources: verification, timm preprocessing, CAM layers, strict loads."""
from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from webapp import serve_one_file

from attnviz.app import cli
from attnviz.core.layers import cam_layer_choices, default_cam_layer
from attnviz.errors import AttnvizError, WeightsUnavailableError
from attnviz.zoo import imagenet
from attnviz.zoo import registry as zoo

TRANSFORMERS = [s for s in imagenet.SOURCES if s.attention in ("vit", "swin")]
EXPECTED = {  # timm's pretrained config for the tagged weights: mean, crop_pct 0.9 -> shorter side 248, bicubic
    "timm-vit_small_patch16_224": ((0.5, 0.5, 0.5), "blocks.11.norm1"),
    "timm-deit_small_patch16_224": ((0.485, 0.456, 0.406), "blocks.11.norm1"),
    "timm-swin_tiny_patch4_window7_224": ((0.485, 0.456, 0.406), "layers.3.blocks.1.norm1"),
}


def test_the_three_transformers_are_in_the_download_list():
    assert {s.name for s in TRANSFORMERS} == set(EXPECTED)
    assert {s.name for s in imagenet.resolve_names([], ["imagenet"])} >= set(EXPECTED)


@pytest.mark.parametrize("src", imagenet.SOURCES, ids=lambda s: s.name)
def test_every_source_is_verifiable_and_says_how(src):
    if src.sha256:
        assert re.fullmatch(r"[0-9a-f]{64}", src.sha256) and src.pin_source
        assert src.verification.startswith("full SHA-256 pinned")
        # a pinned hash only means something for a fixed file: Hugging Face URLs name a commit, not "main"
        assert re.search(r"/resolve/[0-9a-f]{40}/", src.url), src.url
    else:
        assert src.sha256_prefix and src.verification.startswith(f"SHA-256 prefix {src.sha256_prefix}")
    assert len({s.filename for s in imagenet.SOURCES}) == len(imagenet.SOURCES)  # no two share a cache file


@pytest.mark.parametrize("src", TRANSFORMERS, ids=lambda s: s.name)
def test_preprocessing_and_layers_come_from_timm_and_the_layer_rules(src):
    mean, layer = EXPECTED[src.name]
    spec = imagenet.spec_for(src)
    assert (spec.input_size, spec.resize_size, spec.interpolation, spec.mean) == (224, 248, "bicubic", mean)
    assert spec.default_layer == layer and len(spec.class_names) == 1000
    with torch.device("meta"):
        model = imagenet.build_network(src)
    assert default_cam_layer(model) == layer
    assert set(spec.layers) <= set(cam_layer_choices(model))


def _write_release(src, state: dict[str, torch.Tensor]) -> None:
    """What the downloader leaves in the cache: Hugging Face safetensors, or the DeiT release's {"model": ...}."""
    src.path.parent.mkdir(parents=True, exist_ok=True)
    if src.path.suffix == ".safetensors":
        save_file(state, str(src.path))
    else:
        torch.save({"model": state}, src.path)


@pytest.mark.parametrize("src", TRANSFORMERS, ids=lambda s: s.name)
def test_release_layouts_load_strictly_through_the_zoo(tmp_path, monkeypatch, src):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(0)
    reference = imagenet.build_network(src).eval()
    _write_release(src, reference.state_dict())
    unpinned = dataclasses.replace(src, sha256="")  # random weights cannot match the real file's pin
    loaded = zoo.load(imagenet.spec_for(unpinned)).model
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x))
    if src.sha256:  # the real spec checks the pin on every load: a different file is refused, not used
        zoo.clear_cache()
        with pytest.raises(WeightsUnavailableError, match="is corrupt"):
            zoo.load(imagenet.spec_for(src))


def test_download_checks_a_full_pin_and_refuses_sources_without_a_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    payload = b"not really weights" * 100
    digest = hashlib.sha256(payload).hexdigest()
    server = serve_one_file(payload)
    url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
    base = imagenet.SOURCES_BY_NAME["timm-swin_tiny_patch4_window7_224"]
    good = dataclasses.replace(base, name="t-good", sha256=digest, local_name="good.safetensors")
    bad = dataclasses.replace(base, name="t-bad", sha256="0" * 64, local_name="bad.safetensors")
    try:
        assert imagenet.download(good, progress=False, url=url).read_bytes() == payload
        with pytest.raises(AttnvizError, match="does not match the pinned 0000000000000000"):
            imagenet.download(bad, progress=False, url=url)
        assert not bad.path.exists() and not list(bad.path.parent.glob("*.part"))
    finally:
        server.shutdown()

    def no_network(*args, **kwargs):
        raise AssertionError("an unverifiable source must not be fetched")

    unknown = dataclasses.replace(base, name="t-unknown", sha256="", local_name="u.safetensors")
    with pytest.raises(AttnvizError, match="no SHA-256 is known .* will not download it unverified"):
        imagenet.download(unknown, progress=False, opener=no_network)


def test_weights_list_says_how_each_file_is_verified(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "timm-swin_tiny_patch4_window7_224" in out and "full SHA-256 pinned in attnviz" in out
    assert "SHA-256 prefix cd65a155 from the publisher's file name" in out  # DeiT-S, Facebook's release


def test_explain_a_vit_source_with_its_default_layer(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    src = dataclasses.replace(imagenet.SOURCES_BY_NAME["timm-deit_small_patch16_224"])
    torch.manual_seed(0)
    _write_release(src, timm.create_model(src.arch, pretrained=False).state_dict())
    from attnviz.api import explain

    e = explain(imagenet.spec_for(src), np.full((240, 300, 3), 120, np.uint8), methods=("gradcam",))
    assert e.cams["gradcam"].heatmap.shape == (224, 224) and e.layer == "blocks.11.norm1"


def test_pinned_preprocessing_is_timms_own():
    """The transformer sources pin timm's evaluation transform (so listing models never imports timm); it must
    stay equal to timm's pretrained config."""
    from attnviz.zoo.architectures import timm_preprocessing
    from attnviz.zoo.imagenet import SOURCES

    pinned = [s for s in SOURCES if s.timm_cfg]
    assert len(pinned) == 3
    for src in pinned:
        pre = timm_preprocessing(src.timm_cfg)
        assert src.pinned == (pre.input_size, pre.resize_size, pre.mean, pre.std, pre.interpolation), src.name
