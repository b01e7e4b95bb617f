"""Watching and stopping a single-process ``attnviz eval`` run (the page's Data set tab does both)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class EvalProgress:
    """Where a run stands, for a caller watching it (the page's Data set tab): ``images_done`` of
    ``images_total`` images have every model's numbers; ``step`` of ``steps`` model passes are done."""

    images_done: int
    images_total: int
    step: int
    steps: int
    model: str
    seconds: float
    partial: Callable[[], dict]       # results.json of the finished images so far (statistics included)


@dataclass
class EvalHooks:
    """How a caller watches and stops a single-process run: ``on_progress`` after every model's pass over a
    chunk, ``should_stop`` before every pass. A stopped run keeps the chunks every model finished."""

    on_progress: Callable[[EvalProgress], None] | None = None
    should_stop: Callable[[], bool] | None = None

    def stopping(self) -> bool:
        return bool(self.should_stop and self.should_stop())


# (model passes done, model, indices every model finished, the records, the counts) -> stop now?
Watch = Callable[[int, str, list[int], dict, dict], bool]
