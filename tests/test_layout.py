"""The house rules that keep the layout readable: imports flow one way (core ← trainer, runtimes ← export ← deploy ←
commands ← cli.py), runtimes/ holds adapters only, and no module imports another in a cycle."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import from the project (itself always): the one direction of the layout.
ALLOWED = {
    "core": set(),
    "trainer": {"core"},
    "runtimes": {"core"},
    "export": {"core", "trainer", "runtimes"},
    "deploy": {"core", "trainer", "runtimes", "export"},
    "commands": {"core", "trainer", "runtimes", "export", "deploy"},
    "cli": {"core", "commands"},
}


def _modules() -> dict[str, Path]:
    files = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): p
             for package in ALLOWED if (ROOT / package).is_dir() for p in (ROOT / package).rglob("*.py")}
    files = {name.removesuffix(".__init__"): path for name, path in files.items()}
    return {**files, "cli": ROOT / "cli.py"}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (inside functions too, and for type hints)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


MODULES = _modules()
GRAPH = {name: _imports(path, MODULES) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    package = module.split(".")[0]
    wrong = sorted(d for d in GRAPH[module] if d.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, f"{module} imports {wrong}; {package}/ may import only {sorted(ALLOWED[package])}"


# Inside deploy/: the sub-packages (use cases) may import the shared top-level modules and the rooms listed here; the
# top-level modules import no sub-package. ``_room`` names a deploy module's room ("" = top level).
DEPLOY_ALLOWED = {
    "": set(),
    "layers": set(),
    "bench": {"layers"},        # a failed parity check names the first diverging layer
    "predict": set(),
    "triton": set(),
    "serving": {"bench"},
    "pipeline": {"bench", "layers", "predict", "serving", "triton"},
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "deploy" or len(parts) == 1:
        return None
    return parts[1] if (ROOT / "deploy" / parts[1]).is_dir() else ""


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _room(m) is not None))
def test_deploy_rooms_import_one_way(module):
    room = _room(module)
    assert room in DEPLOY_ALLOWED, f"deploy/{room}/ is a new sub-package: add it to DEPLOY_ALLOWED"
    wrong = sorted(d for d in GRAPH[module]
                   if _room(d) not in (None, "", room) and _room(d) not in DEPLOY_ALLOWED[room])
    assert not wrong, f"{module} imports {wrong}; deploy/{room or '.'} may import only {sorted(DEPLOY_ALLOWED[room])}"


def test_every_deploy_room_has_a_docstring():
    rooms = [p for p in (ROOT / "deploy").iterdir() if p.is_dir() and p.name != "__pycache__"]
    for folder in [ROOT / "deploy", *rooms]:
        init = folder / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"{folder} needs a package docstring"


def test_runtimes_holds_adapters_only():
    jobs = ("pipeline", "predict", "plot", "report", "task_parity", "suite", "render", "bench", "gate", "verdict")
    strays = [p.name for p in (ROOT / "runtimes").glob("*.py") if any(job in p.stem for job in jobs)]
    assert not strays, f"{strays} belong in deploy/, the use cases"


def test_no_import_cycle():
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state[nxt] == 1:  # back on the current path
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if state[nxt] == 0:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module, [module])


@pytest.mark.slow  # a fresh interpreter: this process has torch loaded long ago
def test_the_cli_and_the_regression_gate_load_without_the_heavy_libraries():
    """`--help`, option parsing (``--max-slowdown`` reads the gate's formats) and an ONNX Runtime bench need none of
    torch, torchvision, matplotlib or openvino: importing them costs ~3 s a command."""
    import subprocess
    import sys

    code = ("import sys, cli, deploy.bench.gate, deploy.bench.bench; "
            "deploy.bench.gate.parse_slowdown('5%'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'openvino') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"loaded at import: {done.stdout.strip()}"
