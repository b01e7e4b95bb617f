"""The package's floors: every import of an attnviz module (inside functions too) goes to its own layer or a lower
one, and no two modules import each other, directly or round a loop. README "Architecture" states the rule.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "attnviz"

# layer -> the layers it may import (besides itself). The public types and errors sit under everything.
BASE = {"attnviz.errors", "attnviz.results"}
RULE: dict[str, set[str]] = {
    "base": set(),
    "data": {"base"},
    "metrics": {"base"},
    "core": {"base", "data"},
    "zoo": {"base", "data", "core"},
    "api": {"base", "data", "metrics", "core", "zoo"},
    "evaluation": {"base", "data", "metrics", "core", "zoo", "api"},
    "app": {"base", "data", "metrics", "core", "zoo", "api", "evaluation"},
    "entry": {"api", "app"},   # attnviz/__init__ (lazy explain/compare) and __main__ (the CLI)
}
MAX_TOP_LEVEL = 8
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in ("attnviz", "attnviz.__main__"):
        return "entry"
    if module == "attnviz.api":
        return "api"
    return module.split(".")[1]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every attnviz module ``path`` imports, at any depth of the file (function-level imports included)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "attnviz")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "attnviz":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(this)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) for name, path in found.items()}


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in edges.items():
        for target in targets:
            a, b = layer_of(source), layer_of(target)
            if a != b and b not in RULE[a] and not (target in ("attnviz",) and a != "base"):
                bad.append(f"{source} ({a}) imports {target} ({b})")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_the_layers():
    assert layer_violations(graph()) == []


def test_no_import_cycles_among_attnviz_modules():
    assert cycles(graph()) == []


def test_the_checks_catch_a_violation_and_a_cycle():
    edges = {"attnviz.core.engine": {"attnviz.zoo.registry"}, "attnviz.zoo.registry": {"attnviz.core.engine"}}
    assert layer_violations(edges) == ["attnviz.core.engine (core) imports attnviz.zoo.registry (zoo)"]
    assert cycles(edges) == [["attnviz.core.engine", "attnviz.zoo.registry"]]


def test_models_import_nothing_from_attnviz():
    for path in (ROOT / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] == "attnviz" for n in names), path


def test_top_level_stays_small_and_layers_are_subpackages():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"data", "metrics", "core", "zoo", "evaluation", "app"} <= packages


def test_no_function_runs_over_80_lines_and_long_modules_say_why():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
        docstring = ast.get_docstring(tree) or ""
        if len(text.splitlines()) > 450 and "Longer than" not in docstring:
            long_modules.append(name)
    assert long_functions == []
    assert long_modules == [], "a module over ~450 lines says why in its docstring ('Longer than ...: why')"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_batch_and_eval_commands_never_import_gradio(tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 30), (120, 30, 200)).save(folder / "a.png")
    loaded = _modules_after(
        "from attnviz.app import cli\n"
        f"code = cli.main(['explain', {str(folder)!r}, '--out', {str(tmp_path / 'out')!r}, '--methods', 'gradcam',"
        " '--workers', '0', '--quiet'])\n"
        "assert code == 0, code\n"
        "cli.build_parser()\n"
        "import attnviz.evaluation.run, attnviz.evaluation.sanity_checks, attnviz.evaluation.report\n")
    assert "gradio" not in loaded
    assert "attnviz.app.web.page" not in loaded


def test_ruff_is_clean():
    """pyflakes, pycodestyle errors, import order and bugbear (pyproject [tool.ruff]); tests/requirements.txt
    installs ruff beside the interpreter."""
    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -r tests/requirements.txt"
    out = subprocess.run([ruff, "check", "--no-cache", "attnviz", "models", "tests", "benchmarks", "app.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
