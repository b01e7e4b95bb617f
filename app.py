"""Start the attnviz web page: ``python app.py`` (honours GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, ATTNVIZ_DEVICE and ATTNVIZ_MODELS_FILE).

It is ``attnviz serve``: an absent ATTNVIZ_DEVICE is one line and exit status 2, before the port is bound.
"""
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from attnviz.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve"], process_entry=True))   # a stopped server ends the process at once
