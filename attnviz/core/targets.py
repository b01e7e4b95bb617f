"""Which class a map explains: a requested target (index, name or top-1) resolved against one model's classes.

Its errors name the model and list its classes, so a comparison of several models says which one lacks the class.
"""
from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np

from attnviz.errors import TargetError

Target = int | str | None

CLASSES_LISTED = 20   # an unknown class's message lists this many of the model's classes


def class_list(class_names: Sequence[str]) -> str:
    """The model's classes for an error message: all of them, or the first few and how many there are."""
    shown = ", ".join(class_names[:CLASSES_LISTED])
    more = len(class_names) - CLASSES_LISTED
    return f"{shown}, ... ({len(class_names)} in all)" if more > 0 else shown


def resolve_target(target: Target, class_names: Sequence[str], logits: np.ndarray,
                   model: str = "") -> int:
    """None -> top-1 (argmax of ``logits``, an array or a CPU tensor); int -> that index; str -> class by name
    (case and separators ignored). ``model`` names the model in the error, which lists its classes (a
    comparison asks every model in turn)."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "top-1", "top1")):
        return int(np.argmax(np.asarray(logits)))
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(class_names):
            raise TargetError(f"Class index {target} is out of range: {model or 'this model'} has "
                              f"{len(class_names)} classes (0-{len(class_names) - 1}).")
        return int(target)

    def norm(s: str) -> str:
        return s.strip().lower().replace("_", " ").replace("-", " ")

    wanted = norm(str(target))
    for i, name in enumerate(class_names):
        if norm(name) == wanted:
            return i
    if wanted.isdigit():
        return resolve_target(int(wanted), class_names, logits, model)
    close = difflib.get_close_matches(wanted, [norm(c) for c in class_names], n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise TargetError(f"Unknown class {target!r} for {model or 'this model'}.{hint} Its classes: "
                      f"{class_list(class_names)}.")
