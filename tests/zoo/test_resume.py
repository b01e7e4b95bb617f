"""Resumable training: a run stopped midway and resumed ends with the weights of an uninterrupted run, bit for bit,
and a run killed between two saves loses at most ``save_every`` steps."""
from __future__ import annotations

import subprocess
import sys

import torch

import models
from attnviz.data import synth
from attnviz.zoo import train_loop
from attnviz.zoo.training import RECIPE, RECIPES, build_for_recipe

RECIPE_SMALL = {**RECIPE, "batch_size": 8, "epochs": 2, "threads": 1}


def _scenes(n: int = 40) -> synth.Scenes:
    return synth.generate(n, seed=11, size=RECIPE["image_size"])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build("small_resnet_se", num_classes=len(synth.CLASS_NAMES))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    torch.set_num_threads(1)
    scenes = _scenes()
    quiet = {"progress": False, "log": lambda s: None}
    full = train_loop.train_model(_model(), scenes, None, RECIPE_SMALL, **quiet)
    assert full.steps == 10   # 40 scenes / 8 per batch x 2 epochs: crosses an epoch boundary

    state = tmp_path / "run.pt"
    first = train_loop.train_model(_model(), scenes, None, RECIPE_SMALL, state_path=state, save_every=3,
                                   stop_after=7, **quiet)
    assert first.steps == 7 and state.is_file()
    assert torch.load(state, weights_only=True)["step"] == 6   # the last save before the stop
    # a fresh process would build a fresh model: the state alone must carry the run
    resumed = train_loop.train_model(_model(), scenes, None, RECIPE_SMALL, state_path=state, resume=True,
                                     save_every=3, **quiet)
    assert resumed.resumed_from == 6 and resumed.steps == 10
    a, b = _weights(full.model), _weights(resumed.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert full.losses == resumed.losses


def test_a_state_from_another_recipe_is_refused(tmp_path):
    import pytest

    from attnviz.errors import AttnvizError

    scenes = _scenes(16)
    state = tmp_path / "run.pt"
    train_loop.train_model(_model(), scenes, None, RECIPE_SMALL, state_path=state, save_every=1, stop_after=1,
                           progress=False, log=lambda s: None)
    with pytest.raises(AttnvizError, match="another recipe"):
        train_loop.train_model(_model(), scenes, None, {**RECIPE_SMALL, "lr": 0.01}, state_path=state, resume=True,
                               progress=False, log=lambda s: None)


def test_the_vit_recipe_starts_its_trunk_from_the_bundled_baseline():
    model = build_for_recipe("vit", RECIPES["vit"])
    baseline = models.build("small_resnet", num_classes=len(synth.CLASS_NAMES))
    from attnviz.zoo.cards import WEIGHTS_DIR
    from attnviz.zoo.files import read_checkpoint

    baseline.load_state_dict({k: v.float() for k, v in read_checkpoint(WEIGHTS_DIR / "baseline.safetensors").items()})
    assert torch.equal(model.patch_embed.trunk.layer2[1].conv2.weight, baseline.layer2[1].conv2.weight)
    assert model.cls_token is not None and len(model.blocks) == 6


def test_train_help_documents_resume_and_where_the_state_is():
    out = subprocess.run([sys.executable, "-m", "attnviz", "train", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    assert "--resume" in out.stdout and "train-state" in out.stdout
