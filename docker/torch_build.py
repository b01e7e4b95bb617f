"""Build-time guard for the Docker image's PyTorch (standard library only: it runs before the venv exists).

``check INDEX``: the index answers within seconds and lists the pinned torch, else one line and exit 1. Without
it an unreachable index made pip retry for about 12 minutes and then take torch from PyPI (the CUDA build)
although the image promises CPU wheels.
``record INDEX``: prints and writes ``/app/TORCH_BUILD`` (which torch the image got: ``+cpu`` / ``+cuXXX``), and
fails when PyTorch's index of one build was asked for and another build was installed.
"""
from __future__ import annotations

import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

APP = Path(__file__).resolve().parent.parent
RECORD = APP / "TORCH_BUILD"
TIMEOUT_S = 15
ATTEMPTS = 2


def pinned_torch(requirements: Path = APP / "requirements.txt") -> str:
    """The torch version requirements.txt pins (``torch==X``)."""
    found = re.search(r"^torch==([^\s;#]+)", requirements.read_text(), re.M)
    if not found:
        raise SystemExit(f"attnviz build: no torch==X line in {requirements}")
    return found.group(1)


def wanted_build(index: str) -> str | None:
    """``cpu`` / ``cu130`` for PyTorch's own per-build indexes; None for a general index (PyPI)."""
    found = re.search(r"download\.pytorch\.org/whl/(cpu|cu\d+|rocm[\d.]+)/?$", index)
    return found.group(1) if found else None


def check(index: str) -> int:
    url = index.rstrip("/") + "/torch/"
    version = pinned_torch()
    error: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                page = response.read().decode("utf-8", "replace")
            break
        except (OSError, urllib.error.URLError) as exc:
            error = exc
    else:
        print(f"attnviz build: TORCH_INDEX={index} is unreachable ({error}); pass --build-arg TORCH_INDEX=<an index "
              f"with torch=={version}> (README 'Docker')", file=sys.stderr)
        return 1
    if f"torch-{version}" not in page:
        print(f"attnviz build: TORCH_INDEX={index} has no torch {version}", file=sys.stderr)
        return 1
    print(f"attnviz build: TORCH_INDEX={index} answers and lists torch {version}")
    return 0


def record(index: str) -> int:
    import torch  # the venv's interpreter runs this step

    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU only)"
    line = f"torch {torch.__version__}{cuda} from {index}"
    print(f"attnviz build: {line}")
    RECORD.write_text(line + "\n")
    wanted = wanted_build(index)
    got = torch.__version__.partition("+")[2] or None
    if wanted and got != wanted:
        print(f"attnviz build: TORCH_INDEX asked for the +{wanted} build, pip installed {torch.__version__}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("check", "record"):
        print("usage: torch_build.py check|record INDEX", file=sys.stderr)
        return 2
    return check(argv[1]) if argv[0] == "check" else record(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
