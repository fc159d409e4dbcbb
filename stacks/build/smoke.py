"""The smoke check: start a built layer's python and check its sys.path, packages and launch module."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stacks.build.install import indent, pylock_packages, subprocess_env
from stacks.build.request import BuildRequest
from stacks.children import run_child
from stacks.errors import BuildError
from stacks.spec import LayerKind


def expected_packages(
    pylocks: Sequence[Path], platform: str, python_version: str
) -> list[tuple[str, str]]:
    """(name, version) of the packages the locks install on `platform` (shared entries skipped)."""
    packages = [package for pylock in pylocks for package in pylock_packages(pylock)]
    if any(package.get("marker") for package in packages):
        # Most locks hold no marker at all: packaging.markers (~70 ms to import, its regexes)
        # is loaded only for one that does.
        from packaging.markers import Marker

        from stacks.platforms import target_platform

        environment = target_platform(platform).marker_environment(python_version)
        packages = [
            package
            for package in packages
            if not package.get("marker") or Marker(package["marker"]).evaluate(environment)
        ]
    return sorted({(str(p["name"]), str(p.get("version", ""))) for p in packages})


# Reads dist-info folder names instead of importing importlib.metadata (~35 ms per start);
# like importlib.metadata.version, the first distribution of a name on sys.path wins. Its
# argument and report are Python literals (repr, ascii), not JSON: importing json (and the re and
# enum it imports) took a third of the check's time.
_SMOKE = r"""
import os, sys
expected_paths, packages, launch, modules, launch_files = eval(sys.argv[1], {"__builtins__": {}})
norm = [os.path.normcase(os.path.realpath(p)) for p in sys.path]
positions = []
for path in expected_paths:
    real = os.path.normcase(os.path.realpath(path))
    positions.append(norm.index(real) if real in norm else -1)
problems = []
if -1 in positions:
    problems.append("missing from sys.path: " + ", ".join(p for p, i in zip(expected_paths, positions) if i < 0))
elif positions != sorted(positions):
    problems.append("sys.path order is wrong: " + " | ".join(sys.path))

def canonical(name):
    name = name.lower().replace("_", "-").replace(".", "-")
    while "--" in name:
        name = name.replace("--", "-")
    return name

def metadata_version(folder):
    try:
        with open(os.path.join(folder, "METADATA"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return None

installed = {}
for entry in sys.path if packages else ():
    try:
        names = sorted(os.listdir(entry or "."))
    except OSError:
        continue
    for name in names:
        if name.endswith(".dist-info") and "-" in name:
            dist, _, version = name[: -len(".dist-info")].rpartition("-")
            installed.setdefault(canonical(dist), (os.path.join(entry or ".", name), version))
for name, version in packages:
    found = installed.get(canonical(name))
    if found is None:
        problems.append(f"package {name} {version} is not importable (no metadata found)")
    elif version and found[1] != version and metadata_version(found[0]) != version:
        problems.append(f"package {name}: expected {version}, found {metadata_version(found[0]) or found[1]}")
if launch:
    import importlib.util
    try:
        found = importlib.util.find_spec(launch)
    except (ImportError, ValueError) as exc:  # a dotted name whose package does not exist
        found, launch = None, f"{launch} ({exc})"
    if found is None:
        problems.append(f"launch module {launch} cannot be imported")

# Launch and support modules: compiled (not run) with this python, so a syntax error fails
# the build instead of the app's first start.
for path, shown in modules:
    try:
        with open(path, "rb") as handle:
            compile(handle.read(), shown, "exec", dont_inherit=True)
    except SyntaxError as exc:
        problems.append(f"{shown}, line {exc.lineno}: syntax error: {exc.msg}")
    except (ValueError, OSError) as exc:
        problems.append(f"{shown}: cannot be compiled: {exc}")

# The launch module's top-level imports must resolve on this sys.path (found, not imported).
# This process parsed them (ast costs this interpreter ~8 ms to import); a file it could not
# parse (newer syntax than its own Python's) is parsed here.
warnings = []
if launch and not problems:
    import importlib.util
    checked = set()
    for path, shown, imports in launch_files:
        if imports is None:
            import ast
            with open(path, "rb") as handle:
                tree = ast.parse(handle.read(), shown)
            imports = []
            for node in tree.body:
                if isinstance(node, ast.Import):
                    imports.extend((node.lineno, alias.name) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    imports.append((node.lineno, node.module))
        for lineno, name in imports:
            top = name.partition(".")[0]
            if top in checked:
                continue
            checked.add(top)
            try:
                found = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                found = None
            if found is None:
                warnings.append(
                    f"{shown}, line {lineno}: imports {name}, but no module {top!r} is"
                    " in this layer or the layers below it"
                )
print(ascii({"problems": problems, "warnings": warnings, "executable": sys.executable, "prefix": sys.prefix}))
"""


def smoke_check(request: BuildRequest, folder: Path | None = None) -> list[str]:
    """Start the layer's python: sys.path holds the layer and its lower layers in order, every
    locked package of the layer and below has metadata, launch and support modules compile,
    and an app's launch module resolves; return warnings about its unresolved imports.

    `folder` is where the layer is (default: its target); a staging folder beside the
    target works, as a layer's wiring to the layers below is relative.
    """
    layer = request.layer
    target = request.target if folder is None else folder
    python = target / "bin" / ("python3" if layer.kind is LayerKind.RUNTIME else "python")
    sites = [target / request.site_dir] + [
        lower.build_dir / request.site_dir for lower in request.lower
    ]
    pylocks = [request.pylock] + [lower.pylock for lower in request.lower]
    packages = expected_packages(pylocks, request.platform, request.python_version)
    modules, launch_files = module_files(request, target)
    launch_imports = [[path, shown, top_level_imports(Path(path))] for path, shown in launch_files]
    argument = repr(
        [[os.fspath(s) for s in sites], packages, layer.launch_module_name, modules, launch_imports]
    )
    try:
        result = run_child(
            [os.fspath(python), "-X", "utf8", "-I", "-B", "-c", _SMOKE, argument],
            text=True,
            env=subprocess_env(),
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"layer '{layer.env_name}': its python does not start: {exc}") from None
    if result.returncode != 0:
        raise BuildError(
            f"layer '{layer.env_name}': its python failed the smoke check:\n"
            + indent(_as_built(result.stderr.strip(), target, request.target))
        )
    import ast

    try:
        report = ast.literal_eval(result.stdout.strip().splitlines()[-1])
        if not isinstance(report, dict):
            raise ValueError(report)
    except (ValueError, IndexError, SyntaxError, MemoryError, RecursionError):
        raise BuildError(
            f"layer '{layer.env_name}': unexpected smoke check output: {result.stdout!r}"
        ) from None
    if report["problems"]:
        raise BuildError(
            f"layer '{layer.env_name}' failed its smoke check:\n"
            + indent(_as_built("\n".join(report["problems"]), target, request.target))
        )
    return [_as_built(str(text), target, request.target) for text in report.get("warnings", [])]


def _as_built(text: str, folder: Path, target: Path) -> str:
    """`text` with the staging folder's path shown as the build folder's (what users know)."""
    return text if folder == target else text.replace(os.fspath(folder), os.fspath(target))


def top_level_imports(path: Path) -> list[tuple[int, str]] | None:
    """(line, module) of each absolute import at the top level of a Python file; None if this
    Python cannot parse it (the smoke check's interpreter then parses it itself)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), os.fspath(path))
    except (SyntaxError, ValueError, OSError):
        return None
    found: list[tuple[int, str]] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module))
    return found


def module_files(request: BuildRequest, folder: Path) -> tuple[list[list[str]], list[list[str]]]:
    """[copied file in `folder`, source file to show] of every launch and support module .py
    file, and of the launch module's own top-level files (its __init__.py and __main__.py for a
    package)."""
    site = folder / request.site_dir
    layer = request.layer
    every: list[list[str]] = []
    launch: list[list[str]] = []
    for source in (layer.launch_module, *layer.support_modules):
        if source is None:
            continue
        if source.is_dir():
            files = sorted(
                path
                for path in source.rglob("*.py")
                if "__pycache__" not in path.relative_to(source).parts
            )
            pairs = [
                [os.fspath(site / source.name / path.relative_to(source)), _shown(path)]
                for path in files
            ]
            top = {os.fspath(site / source.name / name) for name in ("__init__.py", "__main__.py")}
            own = [pair for pair in pairs if pair[0] in top]
        else:
            pairs = [[os.fspath(site / source.name), _shown(source)]]
            own = pairs
        every.extend(pairs)
        if source == layer.launch_module:
            launch.extend(own)
    return every, launch


def _shown(path: Path) -> str:
    """A source path as the user knows it: relative to the working folder when inside it."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()
