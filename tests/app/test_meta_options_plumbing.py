"""RefineCAM and SESS reach the engine from the CLI (``--refine``, ``--sess [SCALES]``) and the page (the smoothing
group's boxes), and a bad combination is one error line."""
from __future__ import annotations

import json

import cv2

from attnviz.app import cli
from attnviz.app.web import choices, handlers
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes


def test_cli_options_parse_and_run(tmp_path, capsys):
    args = cli.build_parser().parse_args(["explain", "x.png", "--sess", "--refine"])
    assert args.sess == 12 and args.refine is True
    assert cli.build_parser().parse_args(["explain", "x.png", "--sess", "2"]).sess == 2
    assert cli.build_parser().parse_args(["explain", "x.png"]).sess == 0
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), cv2.cvtColor(cached_scenes(1, EVAL_SEED, synth.IMAGE_SIZE).images[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert cli.main(["explain", str(image), "--models", "cbam", "--methods", "gradcam", "--sess", "2",
                     "--layer", "layer1,layer2", "--refine", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "scene.json").read_text())
    assert '"sess": 2' in json.dumps(report) and '"refine": true' in json.dumps(report)
    assert cli.main(["explain", str(image), "--models", "cbam", "--refine", "--out", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("at least two layers" in line for line in err) and not any("Traceback" in line for line in err)


def test_page_boxes_set_the_request():
    request = handlers._request(None, ["cbam"], ["gradcam"], choices.TOP1, [choices.DEFAULT_LAYER], 0.5, "own",
                                "jet", None, None, choices.NO_CONTRAST, [choices.REFINE, choices.SESS])
    assert request.refine is True and request.sess == choices.SESS_SCALES
    plain = handlers._request(None, ["cbam"], ["gradcam"], choices.TOP1, [choices.DEFAULT_LAYER], 0.5, "own",
                              "jet", None, None, choices.NO_CONTRAST, [])
    assert plain.refine is False and plain.sess == 0
