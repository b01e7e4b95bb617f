"""Start the attnviz web page: ``python app.py`` (honours GRADIO_SERVER_NAME and GRADIO_SERVER_PORT).

``ATTNVIZ_MODELS_FILE`` names a models.toml whose models join the page; it is validated completely
(every checkpoint loaded strictly) before the server starts, and a bad entry stops it with one line.
"""
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from attnviz.errors import AttnvizError  # noqa: E402

if __name__ == "__main__":
    from attnviz.modelsfile import load_from_env
    from attnviz.ui import launch

    try:
        load_from_env()
    except AttnvizError as exc:
        print(f"attnviz: error: {exc}", file=sys.stderr)
        sys.exit(2)
    launch()
