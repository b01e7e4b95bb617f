"""eval / sanity / explain DIR use the machine's cores unless --threads says otherwise; results.md records it."""
from __future__ import annotations

import json

import pytest
import torch

from attnviz.app import cli
from attnviz.core.devices import use_threads
from attnviz.errors import AttnvizError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_eval_threads_follow_the_option_and_are_recorded(tmp_path, restore_threads):
    torch.set_num_threads(2)
    code = cli.main(["eval", "--models", "baseline", "--n", "2", "--localisation-only", "--threads", "1",
                     "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert torch.get_num_threads() == 1
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["machine"].endswith(", 1 threads")
    assert "1 threads" in (tmp_path / "results.md").read_text()


def test_without_the_option_torchs_default_stays(restore_threads):
    torch.set_num_threads(3)          # stands for torch's default on a 3-core machine: nothing caps it at 2
    assert use_threads(None) == 3
    assert use_threads(2) == 2 and torch.get_num_threads() == 2


def test_threads_below_one_are_a_user_error(capsys):
    with pytest.raises(AttnvizError, match="--threads"):
        use_threads(0)
    assert cli.main(["sanity", "--models", "baseline", "--n", "1", "--threads", "0", "--quiet"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
