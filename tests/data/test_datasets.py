"""Dataset folders: `attnviz synth export` round trip, listing with reasons, label matching, safe VOC parsing."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnviz.app import cli
from attnviz.data import datasets, synth
from attnviz.data.export import export_scenes
from attnviz.data.scenes import cached_scenes
from attnviz.errors import EXIT_USER_ERROR, DatasetError


@pytest.fixture(autouse=True)
def _private_scene_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))


def _index(item: datasets.DatasetItem) -> int:
    return int(re.fullmatch(r"s\d+_(\d{6})", item.path.stem).group(1))


def test_export_reads_back_identical_pixels_labels_and_masks(tmp_path):
    out = tmp_path / "scenes"
    done = export_scenes(out, 24, seed=777)
    scenes = cached_scenes(24, 777, synth.IMAGE_SIZE)
    ds = datasets.read_dataset(out, synth.CLASS_NAMES)
    assert len(ds) == 24 and not ds.skipped and not ds.unmatched
    assert sorted(_index(item) for item in ds.items) == list(range(24))
    for item in ds.items:
        i = _index(item)
        image, mask = item.load()
        assert item.truth == "mask" and item.label == scenes.labels[i] and item.label_reason == ""
        assert item.class_folder == synth.CLASS_NAMES[scenes.labels[i]] == done.class_folders[i]
        assert np.array_equal(image, scenes.images[i])
        assert mask.dtype == bool and np.array_equal(mask, scenes.masks[i])
    # the scenes are the ones `attnviz eval --n N --seed S` scores: render them again from scratch
    fresh = synth.generate(24, 777, workers=1)
    assert np.array_equal(fresh.images, scenes.images) and np.array_equal(fresh.masks, scenes.masks)


def test_box_export_parses_back_to_the_scene_boxes(tmp_path):
    out = tmp_path / "boxes"
    assert cli.main(["synth", "export", str(out), "--n", "12", "--seed", "778", "--boxes", "--quiet"]) == 0
    scenes = cached_scenes(12, 778, synth.IMAGE_SIZE)
    ds = datasets.read_dataset(out, synth.CLASS_NAMES)
    assert len(ds) == 12 and not ds.skipped
    for item in ds.items:
        i = _index(item)
        assert item.truth == "boxes" and item.truth_path.suffix == ".xml"
        ann = datasets.parse_voc(item.truth_path)
        assert (ann.width, ann.height) == (synth.IMAGE_SIZE, synth.IMAGE_SIZE)
        (box,) = ann.boxes
        assert box.name == synth.CLASS_NAMES[scenes.labels[i]]
        assert (box.x0, box.y0, box.x1, box.y1) == tuple(int(v) for v in scenes.boxes[i])
        x0, y0, x1, y1 = scenes.boxes[i]
        expected = np.zeros((synth.IMAGE_SIZE, synth.IMAGE_SIZE), bool)
        expected[y0:y1, x0:x1] = True
        image, mask = item.load()
        assert np.array_equal(mask, expected) and np.array_equal(image, scenes.images[i])
        assert mask[scenes.masks[i]].all()  # the box holds every visible object pixel


def test_export_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cli.main(["synth", "export", str(tmp_path), "--n", "2", "--quiet"]) == EXIT_USER_ERROR
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def _png(path: Path, size=(20, 10), value=128) -> None:
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_listing_reports_every_unused_file_and_folder_with_a_reason(tmp_path):
    cat, dog, stray = tmp_path / "Cat", tmp_path / "dog", tmp_path / "cats"
    for d in (cat, dog, stray):
        d.mkdir()
    _png(cat / "a.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(cat / "a_mask.png")
    (cat / "b.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(cat / "orphan_mask.png")
    _png(cat / "c.jpg")
    (cat / "c.xml").write_bytes(datasets.voc_xml("c.jpg", 20, 10, [datasets.VocBox("cat", 2, 3, 8, 9)]))
    _png(cat / "e.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(cat / "e_mask.png")
    (cat / "e.xml").write_bytes(datasets.voc_xml("e.png", 20, 10, []))
    (cat / "sub").mkdir()
    _png(cat / "sub" / "deep.webp")
    (cat / "lonely.xml").write_text("<annotation/>")
    _png(dog / "d.png")
    _png(stray / "s.png")
    (tmp_path / "README.txt").write_text("about")

    ds = datasets.read_dataset(tmp_path, ("cat", "bird"))
    by_name = {item.path.name: item for item in ds.items}
    assert set(by_name) == {"a.png", "c.jpg", "e.png", "deep.webp", "d.png", "s.png"}
    assert (by_name["a.png"].truth, by_name["a.png"].truth_path.name) == ("mask", "a_mask.png")
    assert (by_name["c.jpg"].truth, by_name["c.jpg"].truth_path.name) == ("boxes", "c.xml")
    assert (by_name["e.png"].truth, by_name["e.png"].truth_path.name) == ("mask", "e_mask.png")
    assert by_name["deep.webp"].truth is None and by_name["deep.webp"].label == 0  # ImageFolder recurses
    assert by_name["a.png"].label == 0 and by_name["a.png"].class_folder == "Cat"   # case-insensitive
    assert by_name["d.png"].label is None and "no class named 'dog'" in by_name["d.png"].label_reason
    assert by_name["s.png"].label is None and "did you mean: cat" in by_name["s.png"].label_reason
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"b.svg", "orphan_mask.png", "e.xml", "lonely.xml", "README.txt"}
    assert "unsupported file type (.svg)" in reasons["b.svg"]
    assert "no image orphan.*" in reasons["orphan_mask.png"]
    assert "e_mask.png is this image's ground truth" in reasons["e.xml"]
    assert "no image lonely.*" in reasons["lonely.xml"]
    assert "not inside a class folder" in reasons["README.txt"]
    assert {f.name for f in ds.unmatched} == {"dog", "cats"}
    assert {f.name: f.images for f in ds.folders} == {"Cat": 4, "dog": 1, "cats": 1}
    # lazily loaded ground truth at the image's own size
    image, mask = by_name["c.jpg"].load()
    assert image.shape == (10, 20, 3) and mask.shape == (10, 20) and mask.sum() == 6 * 6
    assert mask[3:9, 2:8].all()


def test_bad_files_fail_one_by_one_with_their_names(tmp_path):
    good, bad = tmp_path / "star", tmp_path / "ring"
    good.mkdir(), bad.mkdir()
    _png(good / "ok.png")
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _png(bad / "boxed.png")
    (bad / "boxed.xml").write_text("<annotation><object><bndbox><xmin>5</xmin></bndbox></object></annotation>")
    _png(bad / "masked.png")
    (bad / "masked_mask.png").write_bytes(b"garbage")
    ds = datasets.read_dataset(tmp_path, synth.CLASS_NAMES)
    items = {item.path.name: item for item in ds.items}
    assert len(items) == 4
    with pytest.raises(DatasetError, match=r"^broken.png: This file is not a recognised image"):
        items["broken.png"].load()
    with pytest.raises(DatasetError, match=r"^boxed.xml, object 1: <bndbox> has no <ymin>"):
        items["boxed.png"].load()
    with pytest.raises(DatasetError, match=r"^masked_mask.png: "):
        items["masked.png"].load()
    assert items["ok.png"].load()[1] is None


def test_an_unreadable_sub_folder_is_listed_not_dropped(tmp_path, monkeypatch):
    (tmp_path / "star" / "locked").mkdir(parents=True)
    _png(tmp_path / "star" / "ok.png")
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):   # as os.walk reports a folder it may not list (tests run as root)
        for dirpath, dirnames, filenames in real_walk(top, onerror=onerror, **kwargs):
            if dirpath.endswith("locked"):
                onerror(PermissionError(13, "Permission denied", dirpath))
                continue
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(datasets.os, "walk", walk)
    ds = datasets.read_dataset(tmp_path, synth.CLASS_NAMES)
    assert [i.path.name for i in ds.items] == ["ok.png"]
    assert [(s.path.name, s.reason) for s in ds.skipped] == [("locked", "cannot be read (Permission denied)")]


def test_root_must_be_a_folder_with_class_folders(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        datasets.read_dataset(tmp_path / "missing")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no class folders"):
        datasets.read_dataset(tmp_path)


@pytest.mark.parametrize("text", [
    # billion laughs: entity expansion
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    '<annotation><object><name>&lol2;</name></object></annotation>',
    # external entity: would read a local file
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation>&xxe;</annotation>',
    '<!doctype annotation SYSTEM "http://example.com/voc.dtd"><annotation/>',
])
def test_voc_parser_refuses_dtds_and_entities(tmp_path, text):
    path = tmp_path / "evil.xml"
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"^evil.xml: XML with a DTD or entity declarations is refused"):
        datasets.parse_voc(path)


def test_voc_parser_caps_size_and_reports_malformed_files(tmp_path):
    big = tmp_path / "big.xml"
    big.write_bytes(b"<annotation>" + b" " * datasets.MAX_XML_BYTES + b"</annotation>")
    with pytest.raises(DatasetError, match="big.xml: .* bytes; VOC files over"):
        datasets.parse_voc(big)
    cases = {
        "trunc.xml": (b"<annotation><object>", "not well-formed XML"),
        "latin.xml": ("<annotation><object><name>caf\u00e9</name></object></annotation>".encode("latin-1"),
                      "not UTF-8"),
        "root.xml": (b"<svg/>", "root element is <svg>, not a VOC <annotation>"),
        "nan.xml": (b"<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
                    b"</bndbox></object></annotation>", "<xmin> is 'a', not a number"),
        "flip.xml": (b"<annotation><object><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
                     b"</bndbox></object></annotation>", "the box ends before it starts"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=re.escape(message)) as info:
            datasets.parse_voc(tmp_path / name)
        assert str(info.value).startswith(name)


def test_voc_boxes_union_float_coordinates_and_scaling():
    xml = (b"<annotation><size><width>200</width><height>100</height></size>"
           b"<object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>"
           b"<object><name>b</name><bndbox><xmin>101.0</xmin><ymin>51</ymin><xmax>200</xmax><ymax>100</ymax>"
           b"</bndbox></object></annotation>")
    ann = datasets.parse_voc(xml, "two.xml")
    assert [(b.name, b.x0, b.y0, b.x1, b.y1) for b in ann.boxes] == [("a", 0, 0, 10, 10), ("b", 100, 50, 200, 100)]
    full = datasets.boxes_mask(ann, (100, 200))
    assert full.sum() == 10 * 10 + 100 * 50 and full[:10, :10].all() and full[50:, 100:].all()
    half = datasets.boxes_mask(ann, (50, 100))        # the image was decoded at half size: boxes follow
    assert half.sum() == 5 * 5 + 50 * 25 and half[25:, 50:].all()
    with pytest.raises(DatasetError, match="declares a 200x100 image, but the image is 100x100"):
        datasets.boxes_mask(ann, (100, 100), "two.xml")


def test_a_mask_follows_a_downscaled_image(tmp_path):
    folder = tmp_path / "ring"
    folder.mkdir()
    wide = np.zeros((8, 5000, 3), np.uint8)   # longer than images.MAX_SIDE: decoded at 4096 px
    Image.fromarray(wide).save(folder / "wide.png")
    m = np.zeros((8, 5000), np.uint8)
    m[:, :2500] = 255
    Image.fromarray(m).save(folder / "wide_mask.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "square_mask.png")
    Image.fromarray(wide).save(folder / "square.png")
    items = {i.path.name: i for i in datasets.read_dataset(tmp_path, synth.CLASS_NAMES).items}
    image, mask = items["wide.png"].load()
    assert image.shape[:2] == mask.shape and mask.shape[1] == 4096
    assert mask[:, :2040].all() and not mask[:, 2056:].any()
    with pytest.raises(DatasetError, match=r"square_mask.png: the mask is 8x8, but the image is"):
        items["square.png"].load()


def test_class_names_match_by_name_ignoring_case_and_separators():
    names = ("great white shark", "tiger_shark", "Crane", "crane-bird")
    assert datasets.match_class("Great_White-Shark", names) == (0, "")
    assert datasets.match_class("tiger shark", names) == (1, "")
    assert datasets.match_class("CRANE", names) == (2, "")
    assert datasets.match_class("crane_bird", names) == (3, "")
    label, reason = datasets.match_class("hammerhead", names)
    assert label is None and "no class named 'hammerhead'" in reason
    label, reason = datasets.match_class("n01440764", names)
    assert label is None and "model has 4 classes" in reason
    assert datasets.match_class("anything", None)[0] is None


def test_imagenet_folders_match_by_wordnet_id_and_duplicates_are_named():
    from attnviz.zoo.imagenet import imagenet_classes

    classes = imagenet_classes()
    assert datasets.match_class("n01440764", classes) == (0, "")          # tench
    assert datasets.match_class("n15075141", classes) == (999, "")        # toilet tissue
    assert datasets.match_class("N02012849", classes) == (134, "")        # "crane bird" in torchvision's list
    assert datasets.match_class("goldfish", classes) == (1, "")
    label, reason = datasets.match_class("cardigan", classes)              # Cardigan (corgi) vs cardigan (sweater)
    assert label is None and "264" in reason and "474" in reason and "WordNet id" in reason
    label, reason = datasets.match_class("n99999999", classes)
    assert label is None and "not one of the 1000" in reason
    # any 1000-class model (e.g. random weights with placeholder names) is taken to use the ImageNet order
    assert datasets.match_class("n01443537", [f"class_{i}" for i in range(1000)]) == (1, "")


def test_timm_synset_order_is_torchvision_class_order():
    """timm's packaged synset list, index by index, names the class torchvision's weights call that index.

    Checked against timm's own synset -> lemma table (also packaged): torchvision's name is one of the
    synset's lemmas, or starts with the first lemma where torchvision disambiguated a duplicate
    ("crane bird", "maillot tank suit"). Any shift of the order would break almost every index.
    """
    import importlib.util

    from attnviz.zoo.imagenet import imagenet_classes

    synsets = datasets.imagenet_synsets()
    root = Path(list(importlib.util.find_spec("timm").submodule_search_locations)[0]) / "data" / "_info"
    lemmas = dict(line.split("\t", 1) for line in (root / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    classes = imagenet_classes()
    assert len(synsets) == len(classes) == 1000 and len(set(synsets)) == 1000

    def norm(s: str) -> str:
        return datasets.normalise_name(s.replace("'", ""))

    exact = 0
    for wnid, name in zip(synsets, classes):
        options = [norm(x) for x in lemmas[wnid].split(",")]
        assert norm(name) in options or norm(name).startswith(options[0]), (wnid, name, lemmas[wnid])
        exact += norm(name) in options
    assert exact >= 998
    # a one-place shift would not pass: torchvision's index 1 is not a lemma of synset 0
    assert norm(classes[1]) not in [norm(x) for x in lemmas[synsets[0]].split(",")]


def test_imagenet_layout_wordnet_folders_with_voc_boxes(tmp_path):
    """ImageNet's validation layout, offline: n0xxxxxxx/ folders of JPEGs, each with a VOC file of two boxes."""
    from attnviz.zoo import registry as zoo
    from attnviz.zoo.imagenet import imagenet_classes

    rng = np.random.default_rng(0)
    expected = {"n01440764": 0, "n01443537": 1, "n15075141": 999}
    for wnid in expected:
        (tmp_path / wnid).mkdir()
        for k in range(2):
            stem = f"ILSVRC2012_val_{wnid[-3:]}{k}"
            Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / wnid / f"{stem}.JPEG")
            boxes = [datasets.VocBox(wnid, 4, 5, 20, 30), datasets.VocBox(wnid, 50, 10, 80, 60)]
            (tmp_path / wnid / f"{stem}.xml").write_bytes(datasets.voc_xml(f"{stem}.JPEG", 80, 60, boxes, wnid))
    random_resnet = zoo.random_spec("resnet18", 1000)     # placeholder class names: matched by WordNet id only
    for names in (imagenet_classes(), random_resnet.class_names):
        ds = datasets.read_dataset(tmp_path, names)
        assert len(ds) == 6 and not ds.skipped and not ds.unmatched
        assert {item.class_folder: item.label for item in ds.items} == expected
    image, mask = ds.items[0].load()
    assert image.shape == (60, 80, 3) and mask.shape == (60, 80)
    assert mask.sum() == 16 * 25 + 30 * 50 and mask[5:30, 4:20].all() and mask[10:60, 50:80].all()
