"""A few users at once (benchmarks/load.py, small N): no request fails, no answer carries another user's result,
and a request beyond the queue is refused at once with a "busy, try again" message while the server keeps serving.

The server runs one request at a time with three waiting (ATTNVIZ_CONCURRENCY=1, ATTNVIZ_QUEUE_SIZE=3), so three
users fit exactly and a burst of eight must overflow.
"""
from __future__ import annotations

import sys

import pytest
from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import load  # noqa: E402

# a server start and ~20 requests: about a minute on two busy cores, so it runs with the slow suite
pytestmark = pytest.mark.slow

MODELS, METHODS = "baseline,se", "gradcam"


@pytest.fixture(scope="module")
def server():
    proc, url = load.start_server({"ATTNVIZ_CONCURRENCY": "1", "ATTNVIZ_QUEUE_SIZE": "3"})
    yield proc, url
    load.stop_server(proc)


def test_three_users_get_their_own_results_and_none_fails(server, tmp_path):
    proc, url = server
    images = load.user_images(tmp_path, 3)
    expected = load.references(url, images, MODELS, METHODS)
    assert not load._same(expected[0], expected[1])   # the users' images really give different answers
    level = load.run_level(url, proc.pid, 3, images, expected, MODELS, METHODS, seconds=8, max_requests=9)
    summary = level.summary()
    assert summary["requests"] >= 3 and summary["errors"] == 0 and summary["mixed"] == 0, summary
    assert {o.user for o in level.outcomes} == {0, 1, 2}


def test_beyond_the_queue_a_user_is_told_busy_at_once_and_the_server_keeps_serving(server, tmp_path):
    proc, url = server
    (image,) = load.user_images(tmp_path, 1)
    result = load.burst(url, image, 8)
    assert result["refused"] >= 1 and result["refused"] == result["refused_with_busy_message"], result
    assert result["ok"] >= 4 and result["slowest_refusal_s"] < 10, result   # 1 running + 3 waiting were served
    from gradio_client import Client

    assert load.compare(Client(url, verbose=False), image, *load.LIGHT)   # the next request is served again
