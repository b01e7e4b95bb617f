"""The page's own upload widget and its error handling: readable messages, one log line, no traceback.

Uploads reach attnviz's safe decoder untouched (:data:`SafeImage`); every user-facing failure becomes a
``gr.Error`` with a readable message and the server keeps serving.
"""
from __future__ import annotations

import logging
from abc import ABCMeta
from typing import Any

import gradio as gr

from attnviz.errors import AttnvizError

log = logging.getLogger("attnviz.app.web")


def _safe_image_preprocess(self, payload: Any) -> str | bytes | None:
    """Hand the uploaded file's path (or a pasted image's bytes) to attnviz's decoder, unopened."""
    if payload is None:
        return None
    url = getattr(payload, "url", None) or ""
    if url.startswith("data:"):
        import base64

        return base64.b64decode(url.split(",", 1)[1])
    if getattr(payload, "path", None) is None:
        raise gr.Error("The upload did not arrive; please try again.", print_exception=False)
    return str(payload.path)


# ``gr.Image`` whose preprocessing does not open the upload with PIL: Gradio's own would decode it (or fail
# with a generic error) before our size, bomb and format checks run. ``is_template`` makes the browser use
# the normal image widget. The class is made with ABCMeta directly because Gradio's ComponentMeta would
# write a .pyi stub next to this file at import time (a read-only install could not even import it).
SafeImage = ABCMeta.__new__(type(gr.Image), "SafeImage", (gr.Image,), {
    "__module__": __name__, "__doc__": "gr.Image that leaves decoding to attnviz.data.images.decode_image.",
    "is_template": True, "preprocess": _safe_image_preprocess})


def user_error(exc: AttnvizError | str) -> gr.Error:
    """A refused request: one log line for the operator, the message for the user, no traceback."""
    log.warning("request refused: %s", exc)
    return gr.Error(str(exc), print_exception=False)


def guard(fn, *args, **kwargs):
    """Run ``fn``; user errors become :func:`user_error`, real faults are logged with their traceback."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except AttnvizError as exc:
        raise user_error(exc) from None
    except Exception as exc:  # keep serving; the log has the traceback
        log.exception("request failed")
        raise gr.Error(f"Something went wrong ({type(exc).__name__}). The server is still running; try another "
                       "image or fewer models.", print_exception=False) from None
