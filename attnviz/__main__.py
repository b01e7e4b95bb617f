"""``python -m attnviz`` is the ``attnviz`` command."""
import sys

from .cli import main

sys.exit(main())
