"""Start the attnviz web page: ``python app.py`` (honours GRADIO_SERVER_NAME and GRADIO_SERVER_PORT)."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from attnviz.ui import launch  # noqa: E402

if __name__ == "__main__":
    launch()
