"""The shape of the package: no import cycles (not even inside functions), and the serving
half imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "service"


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``service`` modules it imports anywhere in its body."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_anywhere_in_the_package():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_finds_a_cycle_inside_a_function():
    graph = import_graph()
    graph["service.state"].add("service.routes")  # routes imports state: a cycle
    cycle = find_cycle(graph)
    assert cycle is not None and "service.routes" in cycle and "service.state" in cycle


@pytest.mark.parametrize(
    "modules",
    [
        "service.app, service.cli, service.engines.onnx_engine, service.bench.coldstart",
        "service.variants, service.optimize.options, service.bench.config",
    ],
)
def test_the_serving_half_imports_no_torch(modules):
    code = (
        f"import sys, {modules}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_cli_parser_imports_no_torch():
    code = (
        "import sys, argparse\n"
        "from service.cli import _add_build, _add_bench, _add_serve\n"
        "sub = argparse.ArgumentParser().add_subparsers()\n"
        "_add_build(sub); _add_bench(sub); _add_serve(sub)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_test_file_is_git_ignored():
    """An ignore rule like ``build/`` would keep a tier's new files out of every clone."""
    out = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "tests", "service"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    ignored = [p for p in out.stdout.split() if p.endswith(".py") and "__pycache__" not in p]
    assert ignored == []
