"""The package's import rules, checked on every module's `import` statements (walked with `ast`).

The rules are written once, here; `docs/internals.md` describes them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stacks"

SHARED = (
    "stacks.errors",
    "stacks.hashing",
    "stacks.atomic",
    "stacks.tomlwriter",
    "stacks.platforms",
    "stacks.progress",
    "stacks.streaming",
    "stacks.children",
    "stacks.startup",
)
STEPS = ("stacks.lock", "stacks.runtime", "stacks.build", "stacks.publish")
# For each part: the parts (and shared leaves) it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "stacks.spec": (*STEPS, "stacks.deploy", "stacks.pipeline", "stacks.cli"),
    **{step: ("stacks.pipeline", "stacks.cli") for step in STEPS},
    "stacks.pipeline": ("stacks.cli",),
    **{
        leaf: ("stacks.spec", *STEPS, "stacks.deploy", "stacks.pipeline", "stacks.cli")
        for leaf in SHARED
    },
}
# The deploy package runs on target machines with nothing installed: the standard library and
# its own modules only (that `deploy.py` also runs copied alone is tested in test_deploy.py).
STDLIB_ONLY = ("stacks.deploy",)
# Standard library modules newer than the Python running the tests (3.14's zstd support).
NEWER_STDLIB = frozenset({"compression"})


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """The dotted name of a module file under `root`."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[int, str, bool]]:
    """(line, imported module, typing only) for every import in the file, at any depth.

    Relative imports are resolved; "typing only" marks imports under `if TYPE_CHECKING:`,
    which never run (they count for the layering rules, not for circles).
    """
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base, typing_only))
            # `from package import submodule` imports the submodule too.
            found.extend((node.lineno, f"{base}.{a.name}", typing_only) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {stacks module it imports: line}, only edges to modules that exist."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for line, target, typing_only in imports_of(path, root):
            if target in files and target != name and not typing_only:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def rule_violations(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks a rule, as 'file:line: what is wrong'."""
    problems: list[str] = []
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    for name, path in files.items():
        rel = path.relative_to(root.parent)
        for line, target, _ in imports_of(path, root):
            top = target.split(".")[0]
            if any(_within(name, part) for part in STDLIB_ONLY):
                own = any(_within(target, part) for part in STDLIB_ONLY)
                if not own and top not in sys.stdlib_module_names | NEWER_STDLIB:
                    problems.append(
                        f"{rel}:{line}: imports {target}; the deploy package is standard library only"
                    )
                continue
            for part, banned in FORBIDDEN.items():
                if not _within(name, part):
                    continue
                for bad in banned:
                    if _within(target, bad):
                        problems.append(
                            f"{rel}:{line}: {part} must not import {bad} (imports {target})"
                        )
    problems.extend(f"import circle: {' -> '.join(cycle)}" for cycle in circles(import_graph(root)))
    return problems


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each closed on its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, sorted(group)) for group in groups]


def _cycle_through(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    """A concrete path from the group's first module back to itself, inside the group."""
    start = group[0]
    members = set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*paths[node], start]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return [*group, start]


def _within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def test_the_package_keeps_its_import_rules() -> None:
    assert rule_violations() == []


PLANTED = {
    "spec/bad.py": (
        "from stacks.pipeline.steps import all_tasks\n",
        "stacks.spec must not import stacks.pipeline",
    ),
    "lock/bad.py": (
        "def f():\n    from stacks.cli import main\n",
        "stacks.lock must not import stacks.cli",
    ),
    "build/bad.py": (
        "from stacks.pipeline import engine\n",
        "stacks.build must not import stacks.pipeline",
    ),
    "deploy/bad.py": ("import requests\n", "the deploy package is standard library only"),
    "deploy/bad2.py": (
        "from stacks import errors\n",
        "the deploy package is standard library only",
    ),
    "deploy/deploy.py": (
        "from stacks.lock import pylock\n",
        "the deploy package is standard library only",
    ),
    "hashing.py": (
        "from stacks.spec import load_spec\n",
        "stacks.hashing must not import stacks.spec",
    ),
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_planted_bad_import_is_named(tmp_path: Path, planted: str) -> None:
    tree = _copy_package(tmp_path)
    source, expected = PLANTED[planted]
    target = tree / planted
    target.write_text(target.read_text() + source if target.exists() else source)
    problems = rule_violations(tree)
    assert any(expected in p and p.startswith(f"stacks/{planted}:") for p in problems), problems


def test_a_typing_only_import_is_no_circle(tmp_path: Path) -> None:
    tree = _copy_package(tmp_path)
    typing_only = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stacks import errors\n"
    )
    (tree / "atomic.py").write_text((tree / "atomic.py").read_text() + typing_only)
    (tree / "errors.py").write_text(
        (tree / "errors.py").read_text() + "from stacks import atomic\n"
    )
    assert rule_violations(tree) == []


def test_a_planted_circle_is_named(tmp_path: Path) -> None:
    tree = _copy_package(tmp_path)
    (tree / "errors.py").write_text(
        (tree / "errors.py").read_text() + "from stacks import atomic\n"
    )
    (tree / "atomic.py").write_text(
        (tree / "atomic.py").read_text() + "from stacks import errors\n"
    )
    problems = rule_violations(tree)
    assert "import circle: stacks.atomic -> stacks.errors -> stacks.atomic" in problems, problems


def _copy_package(tmp_path: Path) -> Path:
    import shutil

    tree = tmp_path / "stacks"
    shutil.copytree(PACKAGE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree
