"""Build layer environments: runtime copy or chained venv, install from the lock, link, check."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.errors import BuildError
from stacks.hashing import TreeManifest, scan_tree, skip_bytecode
from stacks.spec import LayerKind, LayerSpec

METADATA_FILE = Path("share/venv/metadata/venvstacks_layer.json")
DYNLIB_DIR = Path("share/venv/dynlib")


@dataclass(frozen=True)
class LowerLayer:
    """A layer below the one being built: its names and where its build is."""

    env_name: str
    deployed_name: str
    build_dir: Path
    pylock: Path


@dataclass(frozen=True)
class BuildRequest:
    """Everything needed to build one layer environment."""

    layer: LayerSpec
    target: Path  # the build folder to (re)create
    pylock: Path
    python_version: str  # full X.Y.Z of the runtime
    deployed_name: str
    lower: tuple[LowerLayer, ...]  # sys.path order, runtime last (empty for a runtime)
    runtime_source: Path | None = None  # runtime layers: the provisioned runtime to copy
    platform: str = "linux_x86_64"
    verified_files: Path | None = None  # the project's record of files already checked

    @property
    def python_xy(self) -> str:
        """The runtime's X.Y."""
        return ".".join(self.python_version.split(".")[:2])

    @property
    def site_dir(self) -> str:
        """The site-packages folder, relative to a layer folder."""
        return f"lib/python{self.python_xy}/site-packages"


def build_layer(request: BuildRequest) -> TreeManifest:
    """Build a layer into `request.target` atomically and return the manifest of what was built."""
    target = request.target
    with atomic.new_directory(target) as stage:
        if request.layer.kind is LayerKind.RUNTIME:
            _build_runtime(request, stage)
        else:
            _build_layered(request, stage)
        _remove_scripts(stage, request)
        _link_dynlibs(request, stage)
        _write_layer_metadata(request, stage)
    # The smoke check runs on the final folder: the venv's paths must be the real ones. Its
    # interpreter (which writes nothing: -B) runs while this process hashes the tree.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stacks-scan") as pool:
        scanning = pool.submit(scan_tree, target, skip=skip_bytecode)
        try:
            smoke_check(request)
        except BuildError:
            scanning.exception()  # wait for the scan before removing what it reads
            atomic.remove_tree(target)
            raise
        return scanning.result()


# ---------------------------------------------------------------- runtime layers


def _build_runtime(request: BuildRequest, stage: Path) -> None:
    source = request.runtime_source
    if source is None or not (source / "bin").is_dir():
        raise BuildError(
            f"layer '{request.layer.env_name}': the runtime has not been provided",
            hint="run `stacks build SPEC` (it provides runtimes first)",
        )
    link_tree(source, stage)
    if _pylock_has_packages(request.pylock):
        _uv_install(request, stage / "bin" / "python3")


def link_tree(source: Path, target: Path) -> None:
    """Recreate `source` under `target` with hard links (copies across filesystems), keeping symlinks."""
    same_device = os.stat(source).st_dev == os.stat(target).st_dev
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        out_dir = target if rel == "." else target / rel
        out_dir.mkdir(exist_ok=True)
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                os.symlink(os.readlink(full), out_dir / name)
                dirnames.remove(name)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                os.symlink(os.readlink(full), out_dir / name)
            elif same_device:
                os.link(full, out_dir / name)
            else:
                shutil.copy2(full, out_dir / name)


# ---------------------------------------------------------------- framework and application layers


def _build_layered(request: BuildRequest, stage: Path) -> None:
    from stacks.deploy import postinstall

    site = stage / request.site_dir
    site.mkdir(parents=True)
    (stage / "bin").mkdir()
    runtime = request.lower[-1]
    base_python = runtime.build_dir / "bin" / "python"
    # Build-time wiring uses build folders (unversioned names); postinstall redoes it when deployed.
    (stage / "pyvenv.cfg").write_text(
        postinstall.render_pyvenv_cfg(base_python, request.python_version), encoding="utf-8"
    )
    lower_sites = [layer.build_dir / request.site_dir for layer in request.lower]
    (site / "sitecustomize.py").write_text(
        postinstall.render_sitecustomize(lower_sites), encoding="utf-8"
    )
    launcher = postinstall.render_launcher(
        f"../{runtime.build_dir.name}/bin/python",
        [str(DYNLIB_DIR)] + [f"../{layer.build_dir.name}/{DYNLIB_DIR}" for layer in request.lower],
        macos=sys.platform == "darwin",
    )
    atomic.write_text(stage / "bin" / "python", launcher, mode=0o755)
    for alias in ("python3", f"python{request.python_xy}"):
        os.symlink("python", stage / "bin" / alias)
    if _pylock_has_packages(request.pylock):
        _uv_install(request, stage / "bin" / "python")
    for module in (request.layer.launch_module, *request.layer.support_modules):
        if module is not None:
            _copy_module(module, site)


def _copy_module(source: Path, site: Path) -> None:
    """Copy a launch or support module (file or package) into site-packages, without metadata."""
    if source.is_dir():
        shutil.copytree(
            source,
            site / source.name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git*"),
            copy_function=shutil.copyfile,
        )
    else:
        shutil.copyfile(source, site / source.name)


# ---------------------------------------------------------------- installing with uv


def _pylock_packages(pylock: Path) -> list[dict[str, Any]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(pylock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"no lock file at {pylock}", hint="run `stacks lock SPEC`") from None
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"cannot read lock file {pylock}: {exc}", hint="run `stacks lock SPEC` to regenerate it"
        ) from None
    return list(data.get("packages", []))


def _pylock_has_packages(pylock: Path) -> bool:
    return bool(_pylock_packages(pylock))


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for build subprocesses (no user site, no stray virtualenv)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1", "PYTHONUTF8": "1"})
    env.update(extra or {})
    return env


def _uv_install(request: BuildRequest, python: Path) -> None:
    """Install the layer's locked packages, then prove every installed file matches its wheel.

    uv hard-links files from its cache; if anything ever edited such a file in place (a build
    or export folder is easy to edit by mistake), the cache itself is corrupt. Checking RECORD
    hashes catches that, and the packages are fetched again instead of re-linking bad bytes.
    """
    _run_uv_install(request, python)
    site = python.parent.parent / request.site_dir
    verified = VerifiedFiles.load(request.verified_files)
    damaged = verify_installed(site, verified)
    if not damaged:
        verified.save()
        return
    _run_uv(
        request, ["cache", "clean", *sorted(damaged)], "cleaning damaged packages from uv's cache"
    )
    _run_uv_install(request, python, reinstall=sorted(damaged))
    still = verify_installed(site, verified)
    verified.save()
    if still:
        details = "; ".join(
            f"{dist}: {', '.join(files[:3])}" for dist, files in sorted(still.items())
        )
        raise BuildError(
            f"layer '{request.layer.env_name}': installed files do not match their wheels even after a fresh install: {details}",
            hint="run `uv cache clean` and build again",
        )


class VerifiedFiles:
    """Files already found to match their RECORD sha256, by inode, size and mtime.

    Installed files are hard links into uv's cache, so every layer (and every rebuild) with
    the same package holds the same inodes: each is hashed once, not once per build. Editing
    a file in place changes its mtime, so it is hashed again, like the stat drift checks.
    """

    LIMIT = 100_000  # entries kept; past it, only the files of this build are kept

    def __init__(self, path: Path | None, known: dict[str, list[Any]] | None = None) -> None:
        self.path = path
        self.known = known or {}
        self.changed = False
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: Path | None) -> VerifiedFiles:
        """The record at `path` (empty if missing or unreadable; None: remember nothing)."""
        if path is None:
            return cls(None)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return cls(path, data if isinstance(data, dict) else {})

    @staticmethod
    def _key(info: os.stat_result) -> str:
        return f"{info.st_dev}:{info.st_ino}"

    def matches(self, info: os.stat_result, sha256: str) -> bool:
        """Whether this file (by stat) was verified before with this RECORD hash."""
        key = self._key(info)
        if self.known.get(key) != [info.st_size, info.st_mtime_ns, sha256]:
            return False
        self.used.add(key)
        return True

    def add(self, info: os.stat_result, sha256: str) -> None:
        """Remember that this file (by stat) matched this RECORD hash."""
        key = self._key(info)
        self.known[key] = [info.st_size, info.st_mtime_ns, sha256]
        self.used.add(key)
        self.changed = True

    def save(self) -> None:
        """Write the record (atomically; concurrent builds may drop each other's additions)."""
        if self.path is None or not self.changed:
            return
        if len(self.known) > self.LIMIT:  # files of packages long gone: start over
            self.known = {key: self.known[key] for key in self.used}
        # A cache: replaced atomically but not fsynced (losing it only means hashing again).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.known), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.changed = False


def verify_installed(site: Path, verified: VerifiedFiles | None = None) -> dict[str, list[str]]:
    """Installed files whose sha256 differs from their RECORD entry, by distribution name."""
    import base64
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    verified = verified or VerifiedFiles(None)

    checks: list[tuple[str, Path, str]] = []
    for record in site.glob("*.dist-info/RECORD"):
        dist = record.parent.name.split("-")[0]
        for row in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))):
            if len(row) >= 2 and row[1].startswith("sha256="):
                path = (site / row[0]).resolve() if ".." in row[0] else site / row[0]
                checks.append((dist, path, row[1][len("sha256=") :]))

    def bad(item: tuple[str, Path, str]) -> tuple[str, str] | None:
        dist, path, expected = item
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            return dist, f"{path.name} (missing)"
        actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
        if actual != expected:
            return dist, path.name
        verified.add(info, expected)
        return None

    def known(item: tuple[str, Path, str]) -> bool:
        try:
            return verified.matches(os.stat(item[1]), item[2])
        except OSError:
            return False

    # Answering from the record takes a stat; only the rest is worth a thread each.
    checks = [item for item in checks if not known(item)] if verified.known else checks
    damaged: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for found in pool.map(bad, checks):
            if found is not None:
                damaged.setdefault(found[0], []).append(found[1])
    return damaged


def _run_uv(request: BuildRequest, arguments: list[str], what: str) -> None:
    from uv import find_uv_bin

    result = subprocess.run(
        [find_uv_bin(), *arguments],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        _raise_if_unwritable(detail, f"layer '{request.layer.env_name}': {what} failed")
        raise BuildError(f"layer '{request.layer.env_name}': {what} failed:\n{_indent(detail)}")


def _run_uv_install(request: BuildRequest, python: Path, *, reinstall: Sequence[str] = ()) -> None:
    from uv import find_uv_bin

    from stacks.platforms import target_platform

    layer = request.layer
    platform = target_platform(request.platform)
    command = [
        find_uv_bin(),
        "pip",
        "install",
        "--python",
        os.fspath(python),
        "--no-config",
        "--no-managed-python",
        "--no-python-downloads",
        "--no-color",
        "--quiet",
        "--link-mode",
        os.environ.get("STACKS_LINK_MODE", "hardlink"),
        "--python-platform",
        platform.uv_python_platform(layer.linux_target, layer.macosx_target),
        "--break-system-packages",
        "--preview-features",
        "pylock",
        *[arg for name in reinstall for arg in ("--reinstall-package", name)],
        "-r",
        os.fspath(request.pylock),
    ]
    macos = f"{layer.macosx_target[0]}.{layer.macosx_target[1]}"
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=subprocess_env({"MACOSX_DEPLOYMENT_TARGET": macos}),
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        _raise_if_unwritable(
            detail, f"layer '{layer.env_name}': installing its locked packages failed"
        )
        raise BuildError(
            f"layer '{layer.env_name}': installing its locked packages failed:\n{_indent(detail)}",
            hint="if the lock is stale, run `stacks lock SPEC --reset-lock " + layer.env_name + "`",
        )


def _raise_if_unwritable(output: str, doing: str) -> None:
    """Fail with the path and cause when uv could not write a file (not a lock problem)."""
    from stacks.lock.uv_project import uv_write_failure

    unwritable = uv_write_failure(output, doing=doing, environ=subprocess_env())
    if unwritable is not None:
        raise unwritable


def _indent(text: str, prefix: str = "    ") -> str:
    lines = text.splitlines()[-40:]
    return "\n".join(prefix + line for line in lines)


# ---------------------------------------------------------------- portability clean-up


def _remove_scripts(stage: Path, request: BuildRequest) -> None:
    """Drop entry-point scripts (absolute shebangs) and machine-specific install records."""
    bin_dir = stage / "bin"
    removed: set[str] = set()
    keep = {"python", "python3", f"python{request.python_xy}"}
    if bin_dir.is_dir():
        for entry in bin_dir.iterdir():
            if entry.name not in keep:
                atomic.remove_tree(entry)
                removed.add(entry.name)
    site = stage / request.site_dir
    if not site.is_dir():
        return
    for dist_info in site.glob("*.dist-info"):
        direct_url = dist_info / "direct_url.json"
        if direct_url.is_file() and "file:" in direct_url.read_text(
            encoding="utf-8", errors="replace"
        ):
            direct_url.unlink()
            removed.add("direct_url.json")
        _rewrite_record(dist_info, removed)


def _rewrite_record(dist_info: Path, removed: set[str]) -> None:
    """Remove RECORD rows of files we deleted (bin scripts, local direct_url.json)."""
    record = dist_info / "RECORD"
    if not removed or not record.is_file():
        return
    rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
    kept = []
    for row in rows:
        if not row:
            continue
        path = row[0]
        in_bin = "/bin/" in path and path.rsplit("/", 1)[-1] in removed
        local_url = (
            path.endswith(f"{dist_info.name}/direct_url.json")
            and not (dist_info / "direct_url.json").exists()
        )
        if not (in_bin or local_url):
            kept.append(row)
    if len(kept) != len([r for r in rows if r]):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        # Replace (new inode): RECORD may be a hard link into uv's cache.
        atomic.write_text(record, out.getvalue())


# ---------------------------------------------------------------- shared libraries across layers


def shared_libraries(site: Path, python_xy: str, excludes: Sequence[str]) -> list[Path]:
    """Shared libraries in a site dir that are not extension modules and not excluded."""
    tag = python_xy.replace(".", "")
    ext_markers = (f".cpython-{tag}", ".abi3.", f".cp{tag}-")
    found = []
    if not site.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            is_lib = name.endswith((".so", ".dylib")) or ".so." in name
            if not is_lib or any(marker in name for marker in ext_markers):
                continue
            path = Path(dirpath, name)
            rel = "/" + path.relative_to(site).as_posix()
            if any(_glob_tail(rel, pattern) for pattern in excludes):
                continue
            found.append(path)
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


def _link_dynlibs(request: BuildRequest, stage: Path) -> None:
    site = stage / request.site_dir
    libraries = shared_libraries(site, request.python_xy, request.layer.dynlib_exclude)
    if not libraries:
        return
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
            + _indent("\n".join(lines)),
            hint=f'exclude all but one, e.g. `dynlib_exclude = ["{by_name[first][1].relative_to(site).as_posix()}"]`',
        )
    dynlib = stage / DYNLIB_DIR
    dynlib.mkdir(parents=True, exist_ok=True)
    for name, (lib,) in sorted(by_name.items()):
        os.symlink(os.path.relpath(lib, dynlib), dynlib / name)


# ---------------------------------------------------------------- metadata and checks


def layer_config(request: BuildRequest) -> dict[str, Any]:
    """The deployed configuration of a layer (docs/internals.md: venvstacks_layer.json)."""
    layer = request.layer
    if layer.kind is LayerKind.RUNTIME:
        return {
            "layer_name": layer.env_name,
            "install_target": request.deployed_name,
            "kind": layer.kind.value,
            "python": "bin/python",
            "py_version": request.python_version,
            "base_python": "bin/python",
            "site_dir": request.site_dir,
            "pylib_dirs": [],
            "dynlib_dirs": [],
            "runtime_layer": request.deployed_name,
            "required_layers": [],
        }
    runtime = request.lower[-1]
    config = {
        "layer_name": layer.env_name,
        "install_target": request.deployed_name,
        "kind": layer.kind.value,
        "python": "bin/python",
        "py_version": request.python_version,
        "base_python": f"../{runtime.deployed_name}/bin/python",
        "site_dir": request.site_dir,
        "pylib_dirs": [f"../{lower.deployed_name}/{request.site_dir}" for lower in request.lower],
        "dynlib_dirs": [f"../{lower.deployed_name}/{DYNLIB_DIR}" for lower in request.lower],
        "runtime_layer": runtime.deployed_name,
        "required_layers": [lower.deployed_name for lower in request.lower[:-1]],
    }
    if layer.launch_module_name:
        config["launch_module"] = layer.launch_module_name
    return config


def _write_layer_metadata(request: BuildRequest, stage: Path) -> None:
    atomic.write_json(stage / METADATA_FILE, layer_config(request))


def expected_packages(
    pylocks: Sequence[Path], platform: str, python_version: str
) -> list[tuple[str, str]]:
    """(name, version) of the packages the locks install on `platform` (shared entries skipped)."""
    from packaging.markers import Marker

    from stacks.platforms import target_platform

    environment = target_platform(platform).marker_environment(python_version)
    found = []
    for pylock in pylocks:
        for package in _pylock_packages(pylock):
            marker = package.get("marker")
            if marker and not Marker(marker).evaluate(environment):
                continue
            found.append((str(package["name"]), str(package.get("version", ""))))
    return sorted(set(found))


# Reads dist-info folder names instead of importing importlib.metadata (~35 ms per start);
# like importlib.metadata.version, the first distribution of a name on sys.path wins.
_SMOKE = r"""
import json, os, sys
expected_paths, packages, launch = json.loads(sys.argv[1])
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
print(json.dumps({"problems": problems, "executable": sys.executable, "prefix": sys.prefix}))
"""


def smoke_check(request: BuildRequest) -> None:
    """Start the layer's python: sys.path holds the layer and its lower layers in order, every
    locked package of the layer and below has metadata, and an app's launch module resolves."""
    layer = request.layer
    target = request.target
    python = target / "bin" / ("python3" if layer.kind is LayerKind.RUNTIME else "python")
    sites = [target / request.site_dir] + [
        lower.build_dir / request.site_dir for lower in request.lower
    ]
    pylocks = [request.pylock] + [lower.pylock for lower in request.lower]
    packages = expected_packages(pylocks, request.platform, request.python_version)
    argument = json.dumps([[os.fspath(s) for s in sites], packages, layer.launch_module_name])
    try:
        result = subprocess.run(
            [os.fspath(python), "-X", "utf8", "-I", "-B", "-c", _SMOKE, argument],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"layer '{layer.env_name}': its python does not start: {exc}") from None
    if result.returncode != 0:
        raise BuildError(
            f"layer '{layer.env_name}': its python failed the smoke check:\n{_indent(result.stderr.strip())}"
        )
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BuildError(
            f"layer '{layer.env_name}': unexpected smoke check output: {result.stdout!r}"
        ) from None
    if report["problems"]:
        raise BuildError(
            f"layer '{layer.env_name}' failed its smoke check:\n"
            + _indent("\n".join(report["problems"]))
        )
