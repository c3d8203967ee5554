"""The import contract: the layers of gradlab and the one direction their imports may take.

The contract is read from the source itself (every ``import`` statement, also those inside
functions), so a new module or import that breaks it fails here, whatever the import order at
run time. The layers, lowest first::

    common (with errors, _version)   the shared facts: metric schema, atomic writer, JSON, fit
    store -> analysis -> report      torch-free: read stored tables
    recorder                         torch only: the hooks
    models -> theory                 the zoo, and what mean-field theory predicts for it
    training                         the loop and what drives it (compare, grids, probe)
    integrations                     Lightning and Hugging Face callbacks
    bench                            benchmarks: outside the library's core
    cli                              thin commands

A layer may import itself and the layers its entry in ``ALLOWED`` names, nothing else.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradlab"

#: Top-level name under gradlab -> its layer.
LAYER_OF = {
    "errors": "common", "_version": "common", "common": "common",
    "store": "store", "analysis": "analysis", "report": "report",
    "recorder": "recorder", "models": "models", "theory": "theory",
    "training": "training", "integrations": "integrations",
    "bench": "bench", "bench_gpu": "bench",
    "cli": "cli", "__main__": "cli",
}
_TORCH_FREE = {"common", "store", "analysis", "report"}
_CORE = {"common", "store", "analysis", "report", "recorder", "models", "theory", "training",
         "integrations"}
#: Layer -> the layers it may import (besides itself and the bare ``gradlab`` package).
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "store": {"common"},
    "analysis": {"common", "store"},
    "report": {"common", "store", "analysis"},
    "recorder": {"common"},
    "models": {"common"},
    "theory": {"common", "models"},
    "training": {"common", "store", "analysis", "report", "recorder", "models", "theory"},
    "integrations": {"common", "store", "analysis", "report", "recorder", "models", "training"},
    "bench": _CORE,
    "cli": _CORE | {"bench"},
}
#: Where an import of a gradlab module may sit inside a function: the commands import their
#: library function when run, so ``gradlab --help`` starts without torch; the package's own
#: ``__init__`` resolves its public names lazily (PEP 562) for the same reason.
DEFERRED_ALLOWED_IN = ("gradlab/cli/", "gradlab/__init__.py")
MAX_LINES = 600
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    source: str  # the importing file, relative to the repository
    target: str  # the imported gradlab module (dotted)
    line: int
    deferred: bool  # inside a function or method


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[Import]:
    """Every import of a gradlab module in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    rel = path.relative_to(PACKAGE.parent).as_posix()
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                # ``from gradlab.x import y`` may name a submodule y: count it as gradlab.x.y.
                targets = [f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module
                           for a in child.names]
            for t in targets:
                if t == "gradlab" or t.startswith("gradlab."):
                    found.append(Import(rel, t, child.lineno, deferred))
            visit(child, inner)

    visit(tree, False)
    return found


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(dotted_or_file: str) -> str | None:
    """The layer of a module (``gradlab.store.core``) or file (``gradlab/store/core.py``);
    None for the bare package."""
    parts = dotted_or_file.replace("/", ".").removesuffix(".py").split(".")
    if len(parts) < 2 or parts[1] == "__init__":
        return None
    return LAYER_OF.get(parts[1], "?" + parts[1])


def violations(imports: list[Import]) -> list[str]:
    """The imports that break the contract, one line each."""
    bad = []
    for imp in imports:
        src, dst = layer(imp.source), layer(imp.target)
        if src is None or dst is None or dst == src:
            continue
        if src.startswith("?") or dst.startswith("?"):
            bad.append(f"{imp.source}:{imp.line}: {imp.target}: a module outside every layer "
                       "(add its package to LAYER_OF)")
        elif dst not in ALLOWED[src]:
            bad.append(f"{imp.source}:{imp.line}: the {src} layer imports {imp.target} ({dst})")
    return bad


def _all_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _all_imports() -> list[Import]:
    return [imp for path in _all_files() for imp in imports_of(path)]


def test_every_import_follows_the_layers():
    assert violations(_all_imports()) == []


def test_gradlab_modules_are_imported_at_module_level():
    """The direction is held by the layers, not by imports hidden in functions."""
    deferred = [f"{i.source}:{i.line}: {i.target}" for i in _all_imports()
                if i.deferred and not i.source.startswith(DEFERRED_ALLOWED_IN)]
    assert deferred == []


def test_torch_free_layers_never_import_torch():
    offenders = []
    for path in _all_files():
        if layer(path.relative_to(PACKAGE.parent).as_posix()) not in _TORCH_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}:{node.lineno}" for n in names if n.split(".")[0] in ("torch", "torchvision")]
    assert offenders == []


def test_torch_free_layers_import_on_a_machine_without_torch():
    """Every module of the torch-free layers imports with torch made unimportable."""
    modules = [_module_name(p) for p in _all_files()
               if layer(p.relative_to(PACKAGE.parent).as_posix()) in _TORCH_FREE
               and not p.name.startswith("__main__")]
    code = ("import sys, importlib\n"
            "sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(len([m for m in sys.modules if m.startswith('gradlab')]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= len(modules)


def test_only_the_cli_imports_click_and_the_benchmarks():
    offenders = []
    for path in _all_files():
        rel = path.relative_to(PACKAGE.parent).as_posix()
        src = layer(rel)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and src != "cli":
                offenders += [f"{rel}:{node.lineno}" for a in node.names if a.name.split(".")[0] == "click"]
            if isinstance(node, ast.ImportFrom) and src != "cli" and (node.module or "").split(".")[0] == "click":
                offenders.append(f"{rel}:{node.lineno}")
    offenders += [f"{i.source}:{i.line}" for i in _all_imports()
                  if layer(i.target) == "bench" and layer(i.source) not in ("bench", "cli")]
    assert offenders == []


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {p.relative_to(PACKAGE.parent).as_posix(): n for p in _all_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_function_is_longer_than_a_screen():
    long = [f"{p.relative_to(PACKAGE.parent).as_posix()}:{node.lineno} {node.name} ({n} lines)"
            for p in _all_files()
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES]
    assert long == []


def test_every_package_is_in_a_layer():
    packages = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _all_files()}
    assert packages - {"__init__"} <= set(LAYER_OF)


# -- the checker itself: it must see what it is meant to catch ---------------------------------
def _write(tmp: Path, rel: str, text: str) -> Path:
    path = tmp / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("source, text, expected", [
    ("gradlab/report/x.py", "from gradlab.training import loop\n", "the report layer imports gradlab.training.loop"),
    ("gradlab/recorder/x.py", "def f():\n    from gradlab.store import load_run\n",
     "the recorder layer imports gradlab.store"),
    ("gradlab/store/x.py", "from ..analysis import diagnose\n", "the store layer imports gradlab.analysis.diagnose"),
    ("gradlab/common/x.py", "import gradlab.models.resnet\n", "the common layer imports gradlab.models.resnet"),
])
def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch, source, text, expected):
    fake = tmp_path / "gradlab"
    for pkg in ("training", "store", "analysis", "models", "report", "recorder", "common"):
        _write(tmp_path, f"gradlab/{pkg}/__init__.py", "")
    _write(tmp_path, "gradlab/training/loop.py", "")
    _write(tmp_path, "gradlab/analysis/diagnose.py", "")
    _write(tmp_path, "gradlab/models/resnet.py", "")
    path = _write(tmp_path, source, text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = violations(imports_of(path))
    assert len(found) == 1 and expected in found[0]


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    fake = tmp_path / "gradlab"
    _write(tmp_path, "gradlab/store/__init__.py", "")
    path = _write(tmp_path, "gradlab/training/x.py",
                  "import gradlab.store\n\nclass A:\n    def f(self):\n        import gradlab.store\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert [i.deferred for i in imports_of(path)] == [False, True]
