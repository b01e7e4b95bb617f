"""``python -m attnviz`` is the ``attnviz`` command."""
import sys

from attnviz.app.cli import main

sys.exit(main())
