"""attnviz: see what attention modules change in a CNN.

Python API::

    from attnviz import explain, explain_batch, compare
    e = explain("cbam", image)                  # one model: predictions, CAMs, attention maps
    es = explain_batch("cbam", paths, batch_size=32, device="auto")   # many images, one pass per chunk
    c = compare(["baseline", "se", "cbam"], image)

Results are plain dataclasses (:mod:`attnviz.results`) holding numpy arrays.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["explain", "explain_batch", "compare", "concepts", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `attnviz --help` and `attnviz.errors` should not pay for importing torch.
    if name in ("explain", "explain_batch", "compare", "concepts"):
        from attnviz import api

        return getattr(api, name)
    raise AttributeError(f"module 'attnviz' has no attribute {name!r}")
