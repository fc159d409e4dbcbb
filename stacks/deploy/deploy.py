# Over 500 lines on purpose, as one file: it is copied to target machines (standard library only),
# with postinstall.py beside it (it configures layers with postinstall's code, never the archive's).
"""Deploy published layers on a target machine (standard library only).

    python -m stacks.deploy ARCHIVE_DIR --target DIR [LAYER...]
    python deploy.py ARCHIVE_DIR --target DIR [LAYER...]   (postinstall.py copied beside it)

Reads `ARCHIVE_DIR/__stacks__/stack[-<platform>].json`, picks the requested layers and
every layer they need, checks that every archive to unpack is there with its recorded size
(before unpacking any). Then, transactionally: each layer to (re)deploy is checked against
its sha256, unpacked safely into a staging folder inside the target, configured from its
metadata by this code (no code from the archive runs; only the verified runtime interpreter
compiles the bytecode, keeping the unchecked-hash pycs an archive ships for the very sources
beside them) and marked; only when every layer is staged are they renamed into
place, lowest first, and the deployment record is written last. A failure before that
leaves every deployed layer as it was; staging folders of a killed deploy are removed by
the next run. A layer already deployed from the same archive is kept only if its content
and configuration still match (a tampered layer is deployed again).

Configured layers hold no absolute path, so a deployment runs unchanged after it is moved,
copied or reached through another path.

Unpacking trusts nothing in the archive: absolute names, `..`, entries outside the
archive's root folder, writes through symlinks, symlinks or hard links leaving the layer
folder, device files, fifos, sparse files, encrypted or unknown zip compression are
refused, and the unpacked size (every entry counted at its on-disk cost) and the number of
entries are capped (decompression and entry-count bombs).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import importlib.util
import json
import lzma
import math
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

METADATA_DIR = "__stacks__"
LAYER_CONFIG = "share/venv/metadata/venvstacks_layer.json"
MARKER = ".stacks-deployed.json"
RECORD = ".stacks-deployment.json"  # the deployment's layers, written after every rename
STAGING_SUFFIXES = (".partial", ".old")
CONTENT = ".stacks-content.json"  # what was unpacked: {path: [kind, sha256 or link target, exec]}
KIND_ORDER = {"runtimes": "runtime", "frameworks": "framework", "applications": "application"}
MAX_UNPACK_RATIO = 200  # unpacked bytes allowed per archive byte
MIN_UNPACK_LIMIT = 64 << 20  # ... but small archives may always unpack this much
ENTRY_COST = 4096  # on-disk cost counted for every entry (an inode and a block at least)
MAX_ENTRIES = 1_000_000
MAX_SYMLINK_HOPS = 40  # as Linux's own limit on following links
_CHUNK = 1 << 20
# Unpacked files are copied in blocks of 64 KiB: 1 MiB blocks are allocated afresh with mmap
# each time (~27 page faults per file here, a third of the unpack's system time).
_READ = 1 << 16


class DeployError(Exception):
    """A deployment failed; the message says which layer and why, the hint how to fix it."""

    def __init__(self, message: str, *, exit_code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class LayerRecord:
    """One layer as the publish metadata describes it."""

    install_target: str
    layer_name: str
    kind: str
    archive_name: str
    sha256: str
    size: int
    runtime_layer: str
    required_layers: tuple[str, ...]
    launch_module: str | None


@dataclass(frozen=True)
class DeployedLayer:
    """The outcome for one layer: where it is and whether it was deployed or kept."""

    install_target: str
    kind: str
    path: Path
    action: str  # "deployed" or "unchanged"
    launch_module: str | None = None

    def run_command(self) -> list[str] | None:
        """The command that runs this application layer (None for other layers)."""
        if not self.launch_module:
            return None
        return [str(self.path / "bin" / "python"), "-m", self.launch_module]


def current_platform() -> str:
    """This machine's target platform name as stacks spells it (e.g. `linux_x86_64`)."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform == "darwin":
        return "macosx_arm64" if arch == "aarch64" else f"macosx_{arch}"
    if sys.platform == "win32":
        return "win_arm64" if arch == "aarch64" else "win_amd64"
    return f"{sys.platform.rstrip('0123456789')}_{arch}"


def read_manifest(archive_dir: Path, *, platform_name: str | None = None) -> list[LayerRecord]:
    """The layers of `ARCHIVE_DIR/__stacks__/stack[-platform].json`, lowest kind first."""
    if not archive_dir.is_dir():
        problem = "is not a folder" if archive_dir.exists() else "does not exist"
        raise DeployError(
            f"ARCHIVE_DIR {archive_dir} {problem}",
            exit_code=2,
            hint=f"give the publish output folder (the one holding the archives and {METADATA_DIR}/)",
        )
    folder = archive_dir / METADATA_DIR
    names = ["stack.json", f"stack-{platform_name or current_platform()}.json"]
    if platform_name:
        names.reverse()
    for name in names:
        path = folder / name
        if path.is_file():
            break
    else:
        raise DeployError(
            f"no stack metadata in {folder} (looked for {' and '.join(names)})",
            exit_code=2,
            hint=f"point ARCHIVE_DIR at the folder holding the archives and {METADATA_DIR}/",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        groups = data["layers"]
        unknown = sorted(set(groups) - set(KIND_ORDER))
        if unknown:
            raise ValueError(f"unknown layer group {unknown[0]!r}")
        records = [
            _layer_record(entry, kind)
            for key, kind in KIND_ORDER.items()
            for entry in groups.get(key, [])
        ]
    except RecursionError:
        raise DeployError(f"{path}: not valid stack metadata (nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeployError(f"{path}: not valid stack metadata ({exc})") from None
    if not records:
        raise DeployError(f"{path}: the stack metadata lists no layers")
    return records


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _layer_record(entry: dict[str, Any], kind: str) -> LayerRecord:
    target = _safe_name(entry["install_target"], "install_target")
    required = tuple(_safe_name(n, "required_layers") for n in entry.get("required_layers", []))
    sha256 = str(entry["archive_hashes"]["sha256"]).lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{target}: archive_hashes.sha256 is not a sha256 hex digest")
    size = entry["archive_size"]
    if isinstance(size, float) and size.is_integer() and math.isfinite(size):
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 62:
        raise ValueError(f"{target}: archive_size {size!r} is not a size in bytes")
    launch = entry.get("app_launch_module") if kind == "application" else None
    if launch is not None and (not isinstance(launch, str) or not launch.isprintable()):
        raise ValueError(f"{target}: app_launch_module {launch!r} is not a module name")
    return LayerRecord(
        install_target=target,
        layer_name=str(entry.get("layer_name", target)),
        kind=kind,
        archive_name=_safe_name(entry["archive_name"], "archive_name"),
        sha256=sha256,
        size=size,
        runtime_layer=_safe_name(entry.get("runtime_layer", target), "runtime_layer"),
        required_layers=required,
        launch_module=launch,
    )


def _safe_name(value: Any, field: str) -> str:
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or value.startswith(".")
        or "/" in value
        or "\\" in value
        or "\0" in value
    ):
        raise ValueError(f"{field} {value!r} is not a plain folder or file name")
    return value


def select_layers(records: list[LayerRecord], wanted: Sequence[str] | None) -> list[LayerRecord]:
    """The wanted layers (by install target or layer name) plus what they need, lowest first."""
    by_target = {r.install_target: r for r in records}
    if not wanted:
        roots = list(records)
    else:
        by_name = {r.layer_name: r for r in records}
        roots = []
        for name in wanted:
            record = by_target.get(name) or by_name.get(name)
            if record is None:
                known = ", ".join(sorted(by_target))
                raise DeployError(f"no layer {name!r} in the stack (known: {known})", exit_code=2)
            roots.append(record)
    ordered: list[LayerRecord] = []
    seen: set[str] = set()

    def visit(record: LayerRecord, trail: tuple[str, ...]) -> None:
        if record.install_target in seen:
            return
        if record.install_target in trail:
            raise DeployError(f"layer dependency cycle: {' -> '.join(trail)}", exit_code=2)
        below = [] if record.kind == "runtime" else [record.runtime_layer]
        for name in [*below, *record.required_layers]:
            if name not in by_target:
                raise DeployError(
                    f"layer {record.install_target} needs {name!r}, which is not in the stack",
                    exit_code=2,
                )
            visit(by_target[name], (*trail, record.install_target))
        seen.add(record.install_target)
        ordered.append(record)

    rank = {"runtime": 0, "framework": 1, "application": 2}
    try:
        for record in sorted(roots, key=lambda r: rank[r.kind]):
            visit(record, ())
    except RecursionError:
        raise DeployError("the layers' required_layers are nested too deeply") from None
    return ordered


def deploy(
    archive_dir: Path,
    target: Path,
    layers: Sequence[str] | None = None,
    *,
    platform_name: str | None = None,
    dry_run: bool = False,
    variants: Sequence[str] = (),
) -> list[DeployedLayer]:
    """Deploy the requested layers (default: all) and what they need from `archive_dir` into `target`.

    With `dry_run`, only check and say what each layer would get; the target is not touched.
    """
    archive_dir = Path(os.path.abspath(archive_dir))
    target = Path(os.path.abspath(target))
    records = read_manifest(archive_dir, platform_name=platform_name)
    if variants:
        records = only_variants(records, archive_dir, platform_name, variants)
    selected = select_layers(records, layers)
    if target.exists() and not target.is_dir():
        raise DeployError(f"--target {target} is not a folder", exit_code=2)
    actions = {r.install_target: _action(target / r.install_target, r) for r in selected}
    # Every archive first: a missing one must not leave the layers below it half deployed.
    check_archives(archive_dir, [r for r in selected if actions[r.install_target] == "deployed"])
    outcome = [
        DeployedLayer(
            r.install_target,
            r.kind,
            target / r.install_target,
            actions[r.install_target],
            r.launch_module,
        )
        for r in selected
    ]
    if dry_run:
        return outcome
    try:
        target.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staged: dict[str, Path] = {}
        try:
            for record in selected:
                if actions[record.install_target] == "deployed":
                    staged[record.install_target] = _stage_layer(
                        archive_dir, target, record, selected, staged
                    )
            # Renaming in is not stopped half way: a signal now waits until the record is
            # written (then the deploy is complete, and the interrupt still exits 130).
            with _signals_deferred():
                for record in selected:  # lowest first: upper layers never see a missing base
                    if record.install_target in staged:
                        _swap_in(staged[record.install_target], target / record.install_target)
                        del staged[record.install_target]
                _write_record(target, selected)
        finally:
            for folder in staged.values():
                _remove_tree(folder)
    except OSError as exc:
        raise _os_error(target, exc) from None
    return outcome


def remove_stale_staging(target: Path) -> list[str]:
    """Remove staging and replaced-layer folders that a killed deploy left in `target`."""
    removed = []
    with os.scandir(target) as scan:
        names = [e.name for e in scan if e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    for name in names:
        if name.endswith(STAGING_SUFFIXES) or ".old-" in name:
            _remove_tree(target / name)
            removed.append(name)
    return removed


def _os_error(target: Path, exc: OSError) -> DeployError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DeployError(
            f"no space left on the device of {target} ({exc.strerror}); nothing was changed",
            hint=f"free space where {target} is (or deploy to another --target), then deploy again",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DeployError(
            f"cannot write in {target}: {exc}",
            hint="deploy to a folder you can write to (--target)",
        )
    return DeployError(f"cannot deploy into {target}: {exc}")


def _stage_layer(
    archive_dir: Path,
    target: Path,
    record: LayerRecord,
    selected: Sequence[LayerRecord],
    staged: dict[str, Path],
) -> Path:
    """Unpack, configure, compile and mark one layer in a staging folder inside `target`."""
    archive = archive_dir / record.archive_name
    verify_archive(archive, record)
    # Named (and handed to the caller, who removes it unless it is renamed in) before it is
    # made: an interrupt between the two would otherwise leave a folder nobody knows of.
    while True:
        staging = target / f".{record.install_target}.{os.urandom(4).hex()}.partial"
        staged[record.install_target] = staging
        try:
            os.mkdir(staging)
            break
        except FileExistsError:
            continue
    os.chmod(staging, 0o755)
    content = unpack_layer(
        archive, staging, record.install_target, max_bytes=_unpack_limit(record.size)
    )
    lower_dirs = {name: str(path) for name, path in staged.items()}
    configure_staged(staging, record, lower_dirs)
    runtime = staged.get(record.runtime_layer, target / record.runtime_layer)
    compile_bytecode(runtime / "bin" / "python", staging / "lib", record)
    _write_json(staging / CONTENT, {"sha256": record.sha256, "entries": content})
    _write_json(staging / MARKER, {"archive_name": record.archive_name, "sha256": record.sha256})
    return staging


def _postinstall() -> Any:
    """postinstall's code: from the stacks package, or the postinstall.py copied beside this file."""
    try:
        from stacks.deploy import postinstall
    except ImportError:
        beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "postinstall.py")
        spec = importlib.util.spec_from_file_location("stacks_postinstall", beside)
        if spec is None or spec.loader is None or not os.path.isfile(beside):
            raise DeployError(
                f"{beside} is missing", hint="copy postinstall.py beside deploy.py"
            ) from None
        postinstall = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(postinstall)
    return postinstall


def configure_staged(layer: Path, record: LayerRecord, lower_dirs: dict[str, str]) -> None:
    """Write the layer's pyvenv.cfg, sitecustomize.py and bin/ from its metadata (our code)."""
    postinstall = _postinstall()
    config = _read_layer_config(layer, record)
    if config.get("install_target", record.install_target) != record.install_target:
        raise DeployError(
            f"{record.install_target}: {LAYER_CONFIG} says install_target "
            f"{config.get('install_target')!r}; the archive does not belong to this layer"
        )
    try:
        postinstall.configure_layer(layer, lower_dirs=lower_dirs)
    except (postinstall.LayerConfigError, ValueError) as exc:
        raise DeployError(f"{record.install_target}: {exc}") from None


_NATIVE_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _check_interpreter(python: Path, record: LayerRecord) -> None:
    """The runtime's interpreter must be a native executable inside its own layer (no script)."""
    runtime = os.path.realpath(python.parent.parent)
    real = os.path.realpath(python)
    try:
        with open(real, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise DeployError(f"{record.install_target}: cannot read {python}: {exc}") from None
    if os.path.commonpath([real, runtime]) != runtime or magic not in _NATIVE_MAGIC:
        raise DeployError(
            f"{record.install_target}: {python} is not a native interpreter inside its runtime "
            f"layer; refusing to run it",
            hint="deploy archives published by stacks (the runtime's bin/python is CPython)",
        )


# Runs in the runtime interpreter (CPython 3.8+). A source keeps the pyc the archive shipped
# only if that is an unchecked-hash pyc of this interpreter's magic number whose source hash
# is this source's (`publish --bytecode`); every other source is compiled, in parallel.
_COMPILE = """\
import compileall, importlib.util, os, signal, sys
from concurrent.futures import ProcessPoolExecutor

if hasattr(signal, "pthread_sigmask"):  # started with SIGINT/SIGTERM blocked (inherited)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

def shipped(source):
    try:
        with open(importlib.util.cache_from_source(source), "rb") as pyc:
            header = pyc.read(16)
        if header[:4] != importlib.util.MAGIC_NUMBER or header[4:8] != b"\\x01\\0\\0\\0":
            return False
        with open(source, "rb") as handle:
            return importlib.util.source_hash(handle.read()) == header[8:16]
    except OSError:
        return False

def main(lib, final, workers):
    todo, folders = [], []
    for folder, subfolders, names in os.walk(lib):
        subfolders[:] = sorted(n for n in subfolders if n != "__pycache__")
        for name in sorted(names):
            source = os.path.join(folder, name)
            if name.endswith(".py") and not shipped(source):
                todo.append(source)
                folders.append(os.path.join(final, os.path.relpath(folder, lib)))
    if workers > 1 and len(todo) > 100:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(compileall.compile_file, todo, folders, [True] * len(todo),
                          [None] * len(todo), [2] * len(todo), chunksize=32))
    else:
        for source, folder in zip(todo, folders):
            compileall.compile_file(source, folder, True, None, 2)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def compile_bytecode(python: Path, lib: Path, record: LayerRecord) -> None:
    """Precompile `lib` with the (verified) runtime interpreter, isolated, in its own group."""
    if not lib.is_dir():
        return
    if not os.access(python, os.X_OK):
        raise DeployError(
            f"{record.install_target}: base Python {python} is missing",
            hint=f"deploy its runtime {record.runtime_layer} too",
        )
    _check_interpreter(python, record)
    final = lib.parent.parent / record.install_target / "lib"
    workers = str(min(os.cpu_count() or 1, 8))
    command = [str(python), "-I", "-S", "-X", "utf8", "-c", _COMPILE, str(lib), str(final), workers]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # Its own process group: interrupted, the whole group (the worker pool) is killed. An
    # interrupt waits while it starts: landing inside Popen() it would leave it running unseen.
    process: subprocess.Popen[bytes] | None = None
    try:
        with _signals_deferred():
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=os.name == "posix",
            )
        _, error = process.communicate()
    except BaseException:
        if process is not None:
            with contextlib.suppress(OSError):
                if os.name == "posix":
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            process.wait()
        raise
    if process.returncode != 0:
        raise DeployError(
            f"{record.install_target}: compiling its bytecode failed (exit "
            f"{process.returncode}):\n{error.decode(errors='replace').strip()}"
        )


def only_variants(
    records: list[LayerRecord],
    archive_dir: Path,
    platform_name: str | None,
    variants: Sequence[str],
) -> list[LayerRecord]:
    """The layers of the given hardware variants and the shared ones, from the manifest's groups."""
    folder = archive_dir / METADATA_DIR
    names = ["stack.json", f"stack-{platform_name or current_platform()}.json"]
    if platform_name:
        names.reverse()  # the order read_manifest looks in
    path = next((folder / n for n in names if (folder / n).is_file()), folder / names[0])
    try:
        groups = json.loads(path.read_text(encoding="utf-8")).get("variants", {})
        groups = {str(k): {str(n) for n in v} for k, v in dict(groups).items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DeployError(f"{path}: not valid stack metadata ({exc})", exit_code=2) from None
    unknown = [name for name in variants if name not in groups]
    if unknown and not groups:
        raise DeployError(
            f"--variant {unknown[0]}: the stack in {archive_dir} has no variants",
            exit_code=2,
            hint="leave out --variant (its spec has no framework with a `variants` table)",
        )
    if unknown:
        raise DeployError(
            f"no variant {unknown[0]!r} in the stack (variants: {', '.join(sorted(groups))})",
            exit_code=2,
            hint="give one of the stack's variants, or leave out --variant",
        )
    in_a_variant = set().union(*groups.values())
    wanted = set().union(*(groups[name] for name in variants))
    return [r for r in records if r.layer_name not in in_a_variant or r.layer_name in wanted]


def check_archives(archive_dir: Path, records: Sequence[LayerRecord]) -> None:
    """Refuse (listing each) when an archive to unpack is missing or not its recorded size."""
    problems = []
    for record in records:
        archive = archive_dir / record.archive_name
        try:
            size = archive.stat().st_size if archive.is_file() else None
        except OSError as exc:
            problems.append(f"{record.install_target}: cannot read {archive}: {exc}")
            continue
        if size is None:
            problems.append(f"{record.install_target}: {archive} is missing")
        elif size != record.size:
            problems.append(
                f"{record.install_target}: {archive} is {size} bytes, the metadata says "
                f"{record.size}; the archive is incomplete or was replaced"
            )
    if problems:
        count = f"{len(problems)} archive{'s' if len(problems) > 1 else ''}"
        raise DeployError(
            f"{count} missing or incomplete in {archive_dir}; nothing was unpacked:\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            hint=f"publish them again (`stacks publish SPEC --output-dir {shlex.quote(str(archive_dir))}`), "
            f"or copy every archive {METADATA_DIR}/ lists into that folder, and deploy again",
        )


def _action(layer: Path, record: LayerRecord) -> str:
    """What deploying `record` into `layer` does: "unchanged" or "deployed"."""
    marker = _read_marker(layer)
    if marker.get("sha256") != record.sha256 or layer_problems(layer):
        return "deployed"
    return "unchanged"


def layer_problems(layer: Path) -> list[str]:
    """What is wrong with a deployed layer: partial, tampered, unconfigured or foreign.

    Compares the layer with what deploy unpacked (`.stacks-content.json`), its generated
    files with what its metadata makes, and checks that its lower layers resolve inside
    the deployment folder. Empty when the layer is as deploy left it.
    """
    if not (layer / MARKER).is_file():
        return ["partial: no deploy marker " + MARKER]
    try:
        data = json.loads((layer / CONTENT).read_text(encoding="utf-8"))
        recorded = data["entries"]
        if not isinstance(recorded, dict):
            raise TypeError("entries is not an object")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return [f"partial: unreadable {CONTENT} ({exc})"]
    config = _layer_config_or_none(layer)
    layered = config is None or config.get("kind") != "runtime"
    problems = []
    current = content_tree(layer, layered=layered)
    for rel in sorted(set(recorded) | set(current)):
        old, new = recorded.get(rel), current.get(rel)
        if old == new:
            continue
        if old is None:
            problems.append(f"added: {rel}")
        elif new is None:
            problems.append(f"missing: {rel}")
        else:
            problems.append(f"changed: {rel}")
        if len(problems) >= 50:
            return problems
    if config is not None and layered:
        problems += _configuration_problems(layer, config)
    return problems


def _configuration_problems(layer: Path, config: dict[str, Any]) -> list[str]:
    postinstall = _postinstall()
    deployment = os.path.realpath(layer.parent)
    problems = []
    try:
        paths = postinstall._resolve_paths(str(layer), config)
        wanted = {
            **postinstall.entry_point_files(
                config, postinstall.find_entry_points(paths["site_dir"])
            ),
            **postinstall.layer_files(
                config, symlinks=True, dynlibs=postinstall.has_dynlibs(str(layer), paths, None)
            ),
        }
    except (postinstall.LayerConfigError, ValueError) as exc:
        return [f"unconfigured: {exc}"]
    for rel, (kind, value, _) in sorted(wanted.items()):
        path = layer / rel
        if kind == "link":
            ok = os.path.islink(path) and os.readlink(path) == value
        else:
            try:
                ok = not os.path.islink(path) and path.read_text(encoding="utf-8") == value
            except (OSError, ValueError):
                ok = False
        if not ok:
            problems.append(f"unconfigured: {rel} is not what its metadata makes")
    for field, value in [("base_python", paths["base_python"])] + [
        ("pylib_dirs", d) for d in paths["pylib_dirs"]
    ]:
        real = os.path.realpath(value)
        if not os.path.exists(real):
            problems.append(f"missing lower layer: {field} {value} does not exist")
        elif os.path.commonpath([real, deployment]) != deployment:
            problems.append(f"foreign: {field} resolves to {real}, outside {deployment}")
    return problems


def _layer_config_or_none(layer: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((layer / LAYER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def _read_layer_config(layer: Path, record: LayerRecord) -> dict[str, Any]:
    config = _layer_config_or_none(layer)
    if config is None:
        raise DeployError(f"{record.install_target}: missing or unreadable {LAYER_CONFIG}")
    return config


def generated(rel: str, *, layered: bool) -> bool:
    """Whether a path is made on the target (configured, compiled, marked), not unpacked."""
    parts = rel.split("/")
    if len(parts) == 1 and (rel.startswith(".") or rel == "pyvenv.cfg"):
        return True
    if layered and parts[0] == "bin":
        return True
    if "__pycache__" in parts or rel.endswith(".pyc"):
        return True
    return (
        len(parts) == 4
        and parts[0] == "lib"
        and parts[2] == "site-packages"
        and parts[3] == "sitecustomize.py"
    )


def content_tree(root: Path, *, layered: bool) -> dict[str, list[Any]]:
    """The layer as deploy records it (sha256 of files, link targets, folders), minus generated."""
    found: dict[str, list[Any]] = {}
    root_str = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root_str):
        rel_dir = os.path.relpath(dirpath, root_str)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if generated(prefix + name, layered=layered):
                dirnames.remove(name)
            elif os.path.islink(full):
                found[prefix + name] = ["l", os.readlink(full)]
                dirnames.remove(name)
            else:
                found[prefix + name] = ["d"]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if generated(prefix + name, layered=layered):
                continue
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                found[prefix + name] = ["l", os.readlink(full)]
            else:
                found[prefix + name] = ["f", _file_sha256(full), bool(info.st_mode & 0o111)]
    return found


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def verify_archive(archive: Path, record: LayerRecord) -> None:
    """Check the archive's size and sha256 against the publish metadata."""
    try:
        size = archive.stat().st_size
        if size != record.size:
            raise DeployError(
                f"{record.install_target}: {archive} is {size} bytes, the metadata says "
                f"{record.size}; the archive is incomplete or was replaced",
                hint="copy the archive again from the publish folder (or publish again), then deploy",
            )
        digest = hashlib.sha256()
        with open(archive, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    except OSError as exc:
        raise DeployError(f"{record.install_target}: cannot read {archive}: {exc}") from None
    if digest.hexdigest() != record.sha256:
        raise DeployError(
            f"{record.install_target}: sha256 of {archive} is {digest.hexdigest()}, the "
            f"metadata says {record.sha256}; refusing a tampered or corrupt archive",
            hint="copy the archive again from the publish folder (or publish again), then deploy",
        )


def _unpack_limit(archive_size: int) -> int:
    return max(MIN_UNPACK_LIMIT, archive_size * MAX_UNPACK_RATIO)


_DIR_FD = os.open in os.supports_dir_fd


def _umask() -> int | None:
    """The process umask, read without changing it (Linux); None when it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Unpacker:
    """Writes entries of one layer archive under `dest`, refusing anything unsafe.

    It alone writes in `dest` (a fresh staging folder), so what it created so far (`kinds`)
    tells whether a path's folders are real folders: no lstat per path component, and files
    are created relative to their folder's descriptor with their final mode.
    """

    def __init__(self, archive: Path, dest: Path, root: str, max_bytes: int) -> None:
        self.archive = archive
        self.dest = str(dest)
        self.root = root
        self.max_bytes = max_bytes
        self.written = 0
        self.entries = 0
        self.links: list[str] = []
        self.kinds: dict[str, str] = {"": "d"}  # rel -> "d", "f" or "l", as created here
        self.content: dict[
            str, list[Any]
        ] = {}  # rel -> ["d"] / ["f", sha256, exec] / ["l", target]
        self._folder: str | None = None  # the folder of the last entry, and its descriptor
        self._folder_fd = -1
        mask = _umask()  # files are created with their final mode; fchmod only if it masks it
        self._chmod = mask is None or bool(mask & 0o755)

    def fail(self, name: str, why: str) -> DeployError:
        return DeployError(f"{self.archive.name}: refusing entry {name!r}: {why}")

    def relative(self, name: str) -> str:
        """The entry's path inside the layer root ('' for the root itself); counts the entry."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise self.fail(name, f"the archive has more than {MAX_ENTRIES} entries")
        self.count(name, ENTRY_COST)
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise self.fail(name, "absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.fail(name, "'..' in the path")
        if not parts or parts[0] != self.root:
            raise self.fail(name, f"outside the archive's root folder {self.root}/")
        return "/".join(parts[1:])

    def parent_dir(self, name: str, rel: str) -> str:
        """Create (as real folders) the parents of `rel`; refuse paths through links or files."""
        folder = rel.rpartition("/")[0]
        if folder != self._folder:
            current = ""
            for part in folder.split("/") if folder else ():
                current = f"{current}/{part}" if current else part
                kind = self.kinds.get(current)
                if kind is None:
                    os.mkdir(os.path.join(self.dest, current), 0o755)
                    self.kinds[current] = "d"
                elif kind != "d":
                    raise self.fail(name, "its folder is a symlink or a file in the archive")
        return folder

    def path_for(self, name: str, rel: str) -> str:
        self.parent_dir(name, rel)
        if rel in self.kinds:
            raise self.fail(name, "duplicate entry")
        return os.path.join(self.dest, rel)

    def folder_fd(self, folder: str) -> int:
        """A descriptor of the (checked, real) folder `folder`, kept while entries stay in it."""
        if folder != self._folder:
            self.close()
            flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
            self._folder_fd = os.open(os.path.join(self.dest, folder), flags)
            self._folder = folder
        return self._folder_fd

    def close(self) -> None:
        if self._folder_fd >= 0:
            os.close(self._folder_fd)
        self._folder, self._folder_fd = None, -1

    def add_dir(self, name: str, rel: str) -> None:
        if not rel:
            return
        self.parent_dir(name, rel)
        kind = self.kinds.get(rel)
        if kind is None:
            os.mkdir(os.path.join(self.dest, rel), 0o755)
            self.kinds[rel] = "d"
        elif kind != "d":
            raise self.fail(name, "duplicate entry")
        self.content[rel] = ["d"]

    def add_file(self, name: str, rel: str, blocks: Iterator[bytes], mode: int) -> None:
        self.path_for(name, rel)
        folder, _, base = rel.rpartition("/")
        perm = 0o755 if mode & 0o111 else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        if _DIR_FD:
            fd = os.open(base, flags, perm, dir_fd=self.folder_fd(folder))
        else:
            fd = os.open(os.path.join(self.dest, rel), flags, perm)
        self.kinds[rel] = "f"
        digest = hashlib.sha256()
        try:
            for block in blocks:
                self.count(name, len(block))
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
            if self._chmod:
                os.fchmod(fd, perm)
        finally:
            os.close(fd)
        self.content[rel] = ["f", digest.hexdigest(), bool(mode & 0o111)]

    def add_symlink(self, name: str, rel: str, link: str) -> None:
        if not link or link.startswith("/") or "\0" in link:
            raise self.fail(name, f"symlink to {link!r} (absolute or empty)")
        resolved = os.path.normpath(os.path.join(os.path.dirname(rel), link))
        if resolved == ".." or resolved.startswith("../"):
            raise self.fail(name, f"symlink to {link!r} leaves the layer folder")
        path = self.path_for(name, rel)
        os.symlink(link, path)
        self.kinds[rel] = "l"
        self.links.append(path)
        self.content[rel] = ["l", link]

    def add_hardlink(self, name: str, rel: str, link_name: str) -> None:
        source_rel = self.relative(link_name)
        if self.kinds.get(source_rel) != "f":
            raise self.fail(name, f"hard link to {link_name!r}, not a file earlier in the layer")
        path = self.path_for(name, rel)
        os.link(os.path.join(self.dest, *source_rel.split("/")), path)
        self.kinds[rel] = "f"
        self.content[rel] = list(self.content[source_rel])

    def expect(self, name: str, size: int) -> None:
        """Refuse an entry up front when its declared size alone would break the cap."""
        if self.written + size > self.max_bytes:
            raise self.fail(name, f"the archive unpacks to more than {self.max_bytes} bytes")

    def count(self, name: str, size: int) -> None:
        self.written += size
        if self.written > self.max_bytes:
            raise self.fail(name, f"the archive unpacks to more than {self.max_bytes} bytes")

    def check_links(self) -> None:
        """After unpacking: every symlink, followed for real, must stay in the layer."""
        real_root = os.path.realpath(self.dest)
        for path in self.links:
            rel = os.path.relpath(path, self.dest)
            real = _follow_links(path, lambda why, rel=rel: self.fail(f"{self.root}/{rel}", why))
            if os.path.commonpath([real, real_root]) != real_root:
                raise self.fail(f"{self.root}/{rel}", "symlink chain leaves the layer folder")


def _follow_links(path: str, fail: Any) -> str:
    """`path` with every symlink followed (at most MAX_SYMLINK_HOPS of them), no recursion."""
    pending = os.path.abspath(path).split(os.sep)[1:]
    resolved = os.sep
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        if not os.path.islink(candidate):
            resolved = candidate
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise fail(f"more than {MAX_SYMLINK_HOPS} symlinks in a chain")
        link = os.readlink(candidate)
        if os.path.isabs(link):
            resolved = os.sep
        pending[:0] = link.split(os.sep)
    return resolved


class _CountingReader:
    """A readable stream that stops with an error after `limit` bytes (decompression bombs)."""

    def __init__(self, stream: IO[bytes], limit: int, unpacker: _Unpacker) -> None:
        self._stream = stream
        self._left = limit
        self._unpacker = unpacker

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size >= 0 else _CHUNK)
        self._left -= len(data)
        if self._left < 0:
            raise self._unpacker.fail("(stream)", "the archive unpacks to too many bytes")
        return data


def unpack_layer(archive: Path, dest: Path, root: str, *, max_bytes: int) -> dict[str, list[Any]]:
    """Unpack `archive` (root folder `root/`) safely into the existing, empty folder `dest`.

    Returns what was unpacked: relative path -> `["d"]`, `["f", sha256, executable]` or
    `["l", link target]` (`stacks verify --deployed` compares a layer with it later).
    """
    unpacker = _Unpacker(archive, dest, root, max_bytes)
    try:
        if archive.name.endswith(".zip"):
            _unpack_zip(archive, unpacker)
        else:
            with _decompressed(archive) as stream:
                _unpack_tar(_CountingReader(stream, max_bytes + (64 << 20), unpacker), unpacker)
        unpacker.check_links()
    except (_TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as exc:
        raise DeployError(f"{archive.name}: cannot unpack: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise  # the target's problem, not the archive's (see deploy())
        raise DeployError(f"{archive.name}: cannot unpack: {exc}") from None
    except (EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise DeployError(f"{archive.name}: cannot unpack: {exc}") from None
    finally:
        unpacker.close()
    # Shipped bytecode (`publish --bytecode`) is compiled output, not compared content: like
    # the pycs deploy compiles, `generated` leaves it out of what verify --deployed compares.
    return {rel: v for rel, v in unpacker.content.items() if not generated(rel, layered=False)}


@contextlib.contextmanager
def _decompressed(archive: Path) -> Iterator[IO[bytes]]:
    name = archive.name
    if name.endswith(".tar.xz"):
        with lzma.open(archive, "rb") as stream:
            yield stream  # type: ignore[misc]
    elif name.endswith(".tar.gz"):
        import gzip

        with gzip.open(archive, "rb") as stream:
            yield stream  # type: ignore[misc]
    elif name.endswith(".tar.zst"):
        with _zstd_stream(archive) as stream:
            yield stream
    else:
        raise DeployError(f"{name}: unknown archive format (tar.xz, tar.zst, tar.gz or zip)")


@contextlib.contextmanager
def _zstd_stream(archive: Path) -> Iterator[IO[bytes]]:
    """zstd decompression: the standard library's (Python 3.14+) or the `zstd` command."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        zstd = None
    if zstd is not None:
        with zstd.open(archive, "rb") as stream:
            yield stream
        return
    command = shutil.which("zstd")
    if command is None:
        raise DeployError(
            f"{archive.name}: .tar.zst needs Python 3.14+ or the zstd command on PATH"
        )
    process: subprocess.Popen[bytes] | None = None
    try:
        with _signals_deferred():  # see compile_bytecode
            process = subprocess.Popen(
                [command, "-dcq", "--", str(archive)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        assert process.stdout is not None
        yield process.stdout
    finally:
        if process is not None:
            if process.stdout is not None:
                process.stdout.close()
            process.kill()
            _, error = process.communicate()
    assert process is not None
    if process.returncode not in (0, -9):
        raise DeployError(f"{archive.name}: zstd failed: {error.decode(errors='replace')}")


class _TarError(Exception):
    """A tar stream that is not a well-formed archive."""


@dataclass
class _TarMember:
    """One entry of a tar stream, as `_tar_members` reads it."""

    name: str
    type: bytes
    size: int
    mode: int
    linkname: str


_TAR_DIR, _TAR_FILE, _TAR_SYMLINK, _TAR_HARDLINK = b"5", b"0", b"2", b"1"
_TAR_FILE_TYPES = (b"0", b"\0", b"7")  # regular, old regular, contiguous (tarfile's too)


class _TarStream:
    """A minimal streaming tar reader: ustar, pax and GNU long names; anything else refused.

    tarfile's stream mode costs ~0.1 ms of Python per entry (headers, its buffering and file
    objects); this reads headers and file data straight from one buffered stream.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = b""
        self._at = 0  # how much of `_buffer` was read (offsets, not slicing off what is read)

    def _read(self, size: int) -> bytes:
        """Exactly `size` bytes (the end of the stream before them is a truncated archive)."""
        start, end = self._at, self._at + size
        if end <= len(self._buffer):
            self._at = end
            return self._buffer[start:end]
        parts = [self._buffer[start:]]
        have = len(parts[0])
        while have < size:
            block = self._stream.read(max(_READ, size - have))
            if not block:
                raise _TarError("unexpected end of data (truncated archive)")
            parts.append(block)
            have += len(block)
        self._buffer, self._at = b"".join(parts), size
        return self._buffer[:size]

    def _skip(self, size: int) -> None:
        while size > 0:
            size -= len(self._read(min(size, _READ)))

    def file_blocks(self, size: int) -> Iterator[bytes]:
        """The `size` bytes of a member's data, in blocks, then its padding is skipped."""
        left = size
        buffered = len(self._buffer) - self._at
        if buffered and left:
            block = self._read(min(buffered, left))
            left -= len(block)
            yield block
        while left > 0:  # straight from the stream: no copy through the buffer
            block = self._stream.read(min(left, _READ))
            if not block:
                raise _TarError("unexpected end of data (truncated archive)")
            left -= len(block)
            yield block
        self._skip(-size % 512)

    def members(self) -> Iterator[_TarMember]:
        """The entries, in order; the caller reads a regular file's data with `file_blocks`."""
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            header = self._read(512)
            if header == bytes(512):
                return
            _check_sum(header)
            kind = header[156:157]
            size = _tar_number(header[124:136])
            if kind in (b"x", b"L", b"K"):
                data = self._read(size)
                self._skip(-size % 512)
                if kind == b"x":
                    pax.update(_pax_records(data))
                elif kind == b"L":
                    long_name = _tar_text(data)
                else:
                    long_link = _tar_text(data)
                continue
            if kind == b"g":
                raise _TarError("pax global headers are not supported")
            name = long_name or _tar_text(header[0:100])
            if header[257:262] == b"ustar" and header[345] and long_name is None:
                name = _tar_text(header[345:500]) + "/" + name
            name = pax.get("path", name)
            linkname = pax.get("linkpath", long_link or _tar_text(header[157:257]))
            if "size" in pax:
                size = _pax_int(pax["size"])
            if any(key.startswith("GNU.sparse") for key in pax):
                kind = b"S"  # a sparse file: refused
            if kind == b"\0" and name.endswith("/"):
                kind = _TAR_DIR
            member = _TarMember(name, kind, size, _tar_number(header[100:108]), linkname)
            pax, long_name, long_link = {}, None, None
            yield member
            if kind not in _TAR_FILE_TYPES:
                self._skip(size + (-size % 512))


def _check_sum(header: bytes) -> None:
    stored = _tar_number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 2 * sum(b for b in header[:148] + header[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise _TarError("bad checksum in a tar header")


def _tar_number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU)
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _TarError(f"invalid number {text!r} in a tar header") from None


def _tar_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """`length key=value\\n` records of a pax extended header."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at:] != bytes(len(data) - at):
        space = data.find(b" ", at)
        try:
            length = int(data[at:space]) if space > at else 0
        except ValueError:
            length = 0
        record = data[at : at + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise _TarError("invalid pax extended header")
        key, _, value = record[space - at + 1 : -1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records


def _pax_int(value: str) -> int:
    if not value.isdigit():
        raise _TarError(f"invalid pax size {value!r}")
    return int(value)


def _unpack_tar(stream: Any, unpacker: _Unpacker) -> None:
    tar = _TarStream(stream)
    for member in tar.members():
        name = member.name
        rel = unpacker.relative(name)
        if member.type == _TAR_DIR:
            unpacker.add_dir(name, rel)
        elif not rel:
            raise unpacker.fail(name, "the root folder must be a folder")
        elif member.type == _TAR_SYMLINK:
            unpacker.add_symlink(name, rel, member.linkname)
        elif member.type == _TAR_HARDLINK:
            unpacker.add_hardlink(name, rel, member.linkname)
        elif member.type in _TAR_FILE_TYPES:
            unpacker.expect(name, member.size)
            unpacker.add_file(name, rel, tar.file_blocks(member.size), member.mode)
        else:
            raise unpacker.fail(name, "device, fifo or other special file")


def _unpack_zip(archive: Path, unpacker: _Unpacker) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            rel = unpacker.relative(name)
            if info.flag_bits & 0x1:
                raise unpacker.fail(name, "encrypted zip entry")
            if info.compress_type not in _ZIP_METHODS:
                raise unpacker.fail(
                    name, f"unsupported zip compression method {info.compress_type}"
                )
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            kind = stat.S_IFMT(mode)
            if info.is_dir() or kind == stat.S_IFDIR:
                unpacker.add_dir(name, rel)
            elif not rel:
                raise unpacker.fail(name, "the root folder must be a folder")
            elif kind == stat.S_IFLNK:
                if info.file_size > 4096:
                    raise unpacker.fail(name, "symlink target too long")
                link = zf.read(info).decode("utf-8")
                unpacker.add_symlink(name, rel, link)
            elif kind not in (0, stat.S_IFREG):
                raise unpacker.fail(name, "device, fifo or other special file")
            else:
                unpacker.expect(name, info.file_size)
                with zf.open(info) as source:
                    unpacker.add_file(name, rel, iter(lambda: source.read(_READ), b""), mode)


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _swap_in(staging: Path, layer: Path) -> None:
    old = None
    if os.path.lexists(layer):
        old = layer.with_name(f".{layer.name}.old-{os.getpid()}")
        _remove_tree(old)
        os.replace(layer, old)
    os.replace(staging, layer)
    if old is not None:
        _remove_tree(old)


def _remove_tree(path: Path) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _read_marker(layer: Path) -> dict[str, Any]:
    try:
        data = json.loads((layer / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(target: Path, selected: Sequence[LayerRecord]) -> None:
    """The deployment's record (layers and their archives), updated after every rename."""
    try:
        data = json.loads((target / RECORD).read_text(encoding="utf-8"))
        layers = data["layers"] if isinstance(data.get("layers"), dict) else {}
    except (OSError, ValueError, AttributeError, RecursionError):
        layers = {}
    for record in selected:
        layers[record.install_target] = {
            "archive_name": record.archive_name,
            "sha256": record.sha256,
            "kind": record.kind,
        }
    _write_json(target / RECORD, {"layers": layers})


def read_record(target: Path) -> dict[str, Any]:
    """The layers the deployment record lists (install target -> archive, sha256, kind)."""
    try:
        data = json.loads((target / RECORD).read_text(encoding="utf-8"))
        layers = data["layers"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return {}
    return layers if isinstance(layers, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    """Write sorted JSON via a temporary sibling and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked, not lost) until the block is done."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: nothing to block
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so staging folders are removed."""
    if not threading_main():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def threading_main() -> bool:
    """Whether this is the main thread (only it may set signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: deploy layers, print how to run each application; exit 0, 1 or 2."""
    parser = argparse.ArgumentParser(
        description="Deploy published stacks layers (and the layers they need) into a folder.",
        allow_abbrev=False,
    )
    parser.add_argument("archive_dir", type=Path, help="folder with the archives and __stacks__/")
    parser.add_argument("layers", nargs="*", help="layers to deploy (default: all)")
    parser.add_argument("--target", type=Path, required=True, help="deployment folder")
    parser.add_argument("--platform", help="platform of the metadata (default: this machine's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the archives and say what each layer would get; change nothing",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this hardware variant's layers and the shared ones (repeatable)",
    )
    args = parser.parse_intermixed_args(argv)
    try:
        with _sigterm_as_interrupt():
            deployed = deploy(
                args.archive_dir,
                args.target,
                args.layers,
                platform_name=args.platform,
                dry_run=args.dry_run,
                variants=args.variant,
            )
    except KeyboardInterrupt:
        # deploy() removed its staging folders on the way out; deployed layers are untouched.
        print("stacks: interrupted", file=sys.stderr)
        return 130
    except DeployError as exc:
        # As the rest of stacks: `error: <message>`, then `  hint: <fix>` on its own line.
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        layers = [
            {
                "install_target": layer.install_target,
                "kind": layer.kind,
                "path": str(layer.path),
                "action": layer.action,
                "run": layer.run_command(),
            }
            for layer in deployed
        ]
        print(json.dumps({"dry_run": args.dry_run, "layers": layers}, indent=2))
        return 0
    if args.quiet:
        return 0
    would, width = ("would be ", 21) if args.dry_run else ("", 12)
    for layer in deployed:
        print(f"{would + layer.action:>{width}}  {layer.install_target}  ({layer.path})")
    for layer in deployed:
        command = layer.run_command()
        if command:
            print(f"run {layer.install_target}: {shlex.join(command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
