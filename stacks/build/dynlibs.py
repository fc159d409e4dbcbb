"""Shared libraries across layers: find them and link them into the layer's dynlib folder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from stacks.build.install import indent
from stacks.build.request import DYNLIB_DIR, BuildRequest
from stacks.errors import BuildError


def shared_libraries(
    site: Path, python_xy: str, excludes: Sequence[str], files: Iterable[str]
) -> list[Path]:
    """Shared libraries among `files` (paths relative to the site dir, as a walk of it lists
    its files and links to files) that are not extension modules and not excluded."""
    tag = python_xy.replace(".", "")
    ext_markers = (f".cpython-{tag}", ".abi3.", f".cp{tag}-")
    found: list[Path] = []
    for rel in files:
        name = rel.rpartition("/")[2]
        is_lib = name.endswith((".so", ".dylib")) or ".so." in name
        if not is_lib or any(marker in name for marker in ext_markers):
            continue
        if any(_glob_tail("/" + rel, pattern) for pattern in excludes):
            continue
        found.append(site / rel)
    return sorted(found)


def _glob_tail(path: str, pattern: str) -> bool:
    """Whether glob `pattern` matches the end of `/`-rooted `path` (`**` spans folders, `*` does not)."""
    import re

    if pattern == "*":
        return True
    parts = re.split(r"(\*\*|\*|\?)", pattern.lstrip("/"))
    regex = "".join(
        {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts
    )
    anchor = "^/" if pattern.startswith("/") else "(^|/)"
    return re.search(f"{anchor}{regex}$", path) is not None


def link_dynlibs(request: BuildRequest, stage: Path, site_files: Iterable[str]) -> list[str]:
    """Link the layer's shared libraries (not extension modules) into its dynlib folder.

    `site_files` are the files of its site dir (see `shared_libraries`); what was made is
    returned, as paths relative to `stage` (folders first).
    """
    site = stage / request.site_dir
    libraries = shared_libraries(site, request.python_xy, request.layer.dynlib_exclude, site_files)
    if not libraries:
        return []
    by_name: dict[str, list[Path]] = {}
    for lib in libraries:
        by_name.setdefault(lib.name, []).append(lib)
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if clashes:
        lines = [
            f"{name}: {', '.join(str(p.relative_to(site)) for p in paths)}"
            for name, paths in sorted(clashes.items())
        ]
        first = sorted(clashes)[0]
        raise BuildError(
            f"layer '{request.layer.env_name}': ambiguous shared library names:\n"
            + indent("\n".join(lines)),
            hint=f'exclude all but one, e.g. `dynlib_exclude = ["{by_name[first][1].relative_to(site).as_posix()}"]`',
        )
    dynlib = stage / DYNLIB_DIR
    made = [
        folder.as_posix()
        for folder in (*reversed(DYNLIB_DIR.parents[:-1]), DYNLIB_DIR)
        if not (stage / folder).is_dir()
    ]
    dynlib.mkdir(parents=True, exist_ok=True)
    for name, (lib,) in sorted(by_name.items()):
        os.symlink(os.path.relpath(lib, dynlib), dynlib / name)
        made.append(f"{DYNLIB_DIR.as_posix()}/{name}")
    return made
