"""Byte-reproducible layer archives, and the view of a layer that archives and exports share.

Archive and export share one view of a layer (`layer_entries`): the built tree minus what
postinstall regenerates on the target (`pyvenv.cfg`, `sitecustomize.py`, a layered env's
`bin/`), minus bytecode and hidden top-level entries, plus the injected `postinstall.py`.

Archives depend only on that content, the root folder name and the given mtime: entries
are sorted, every entry gets exactly `mtime`, owners are root with empty names, and modes
are normalised (0o755 folders and executables, 0o644 other files, 0o777 symlinks).
Symlinks stay symlinks but must stay inside the layer: cross-layer links are never needed
in archived content (the only ones, in `bin/`, are regenerated on the target) and would be
wrong after a versioned rename, so they are refused. Hard links are stored as separate
regular files, so the bytes do not depend on how the build tree shares inodes.

It is over ~500 lines because the four formats (tar.xz, tar.zst, tar.gz, zip) share
that one entry view and one write path (temporary file, hashing writer, rename); split
by format, each module would need the whole of it.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from stacks import atomic
from stacks.errors import PublishError
from stacks.progress import ProgressFile

ARCHIVE_FORMATS = ("tar.xz", "tar.zst", "tar.gz", "zip")
INJECTED_POSTINSTALL = Path(__file__).parent.parent / "deploy" / "postinstall.py"

XZ_PRESET = 6
# 4 MiB: xz preset 6 compresses ~15% faster per byte than with 8 MiB chunks (less history
# to search) for ~1% more size, and small layers still split across all cores.
XZ_CHUNK_SIZE = 4 << 20
# 6: within ~3% of level 10's size at about half its CPU time (measured on a runtime layer).
ZSTD_LEVEL = 6
GZIP_LEVEL = 6
_COPY_CHUNK = 1 << 20
_ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest date a zip entry can hold


def compression_tools(fmt: str) -> dict[str, Any]:
    """The compression library, its version and settings for archives in format `fmt`.

    Another version may give other bytes for the same content (`build_tools` in the
    published metadata records it, with the other tools that decide an archive's bytes).
    """
    import zlib

    tools: dict[str, Any] = {"format": fmt}
    if fmt == "tar.xz":
        tools.update(
            library="liblzma",
            version=_liblzma_version(),
            level=XZ_PRESET,
            chunk_size=XZ_CHUNK_SIZE,
        )
    elif fmt == "tar.zst":
        tools.update(
            library="zstandard",
            version=zstandard.__version__,
            libzstd=".".join(map(str, zstandard.ZSTD_VERSION)),
            level=ZSTD_LEVEL,
        )
    else:  # tar.gz and zip deflate with zlib
        tools.update(library="zlib", version=zlib.ZLIB_RUNTIME_VERSION, level=GZIP_LEVEL)
    return tools


@functools.cache
def _liblzma_version() -> str | None:
    """The version of the liblzma that Python's lzma module uses (None if it cannot be asked)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("lzma")
    try:
        library = ctypes.CDLL(name or "liblzma.so.5")
        library.lzma_version_string.restype = ctypes.c_char_p
        version: bytes = library.lzma_version_string()
    except (OSError, AttributeError):
        return None
    return version.decode("ascii", "replace")


@dataclass(frozen=True)
class LayerEntry:
    """One archived/exported entry of a layer: a folder, a regular file or a symlink."""

    name: str  # POSIX path relative to the layer root
    kind: str  # "dir", "file" or "symlink"
    source: Path  # where its content comes from
    executable: bool = False
    link_target: str | None = None  # relative target of a symlink

    @property
    def mode(self) -> int:
        """The normalised permission bits stored for this entry."""
        if self.kind == "symlink":
            return 0o777
        return 0o755 if self.kind == "dir" or self.executable else 0o644


@dataclass(frozen=True)
class ArchiveResult:
    """A written archive: where it is, its size in bytes and its sha256 (hex)."""

    path: Path
    size: int
    sha256: str


def layer_entries(tree: Path, *, layered: bool) -> list[LayerEntry]:
    """The filtered, sorted content of the layer at `tree`, with `postinstall.py` injected."""
    root = Path(os.path.abspath(tree))
    if not root.is_dir():
        raise PublishError(f"layer folder {root} does not exist; build the layer first")
    entries: list[LayerEntry] = []
    _walk(root, root, "", layered, entries)
    entries.append(LayerEntry("postinstall.py", "file", INJECTED_POSTINSTALL))
    entries.sort(key=lambda e: e.name)
    return entries


def _skip(rel: str, name: str, is_dir: bool, layered: bool) -> bool:
    top = "/" not in rel
    if top and (name.startswith(".") or name in ("pyvenv.cfg", "postinstall.py")):
        return True
    if top and layered and name == "bin":
        return True
    if is_dir:
        return name == "__pycache__"
    if name.endswith(".pyc"):
        return True
    parts = rel.split("/")
    return (
        name == "sitecustomize.py"
        and len(parts) == 4
        and parts[0] == "lib"
        and parts[2] == "site-packages"
    )


def _walk(root: Path, folder: Path, prefix: str, layered: bool, out: list[LayerEntry]) -> None:
    with os.scandir(folder) as scan:
        children = sorted(scan, key=lambda e: e.name)
    for child in children:
        rel = prefix + child.name
        is_dir = child.is_dir(follow_symlinks=False)
        if _skip(rel, child.name, is_dir, layered):
            continue
        path = Path(child.path)
        if child.is_symlink():
            out.append(LayerEntry(rel, "symlink", path, link_target=_link_target(root, rel, path)))
        elif is_dir:
            out.append(LayerEntry(rel, "dir", path))
            _walk(root, path, rel + "/", layered, out)
        elif child.is_file(follow_symlinks=False):
            executable = bool(child.stat(follow_symlinks=False).st_mode & 0o111)
            out.append(LayerEntry(rel, "file", path, executable=executable))
        else:
            raise PublishError(
                f"{path}: not a regular file, folder or symlink; layers cannot ship "
                "sockets, fifos or device files",
                hint="remove it from the build environment",
            )


def _link_target(root: Path, rel: str, path: Path) -> str:
    """The symlink's target relative to its folder, refusing targets outside the layer."""
    target = os.readlink(path)
    link_dir = os.path.dirname(os.path.join(str(root), rel))
    if os.path.isabs(target):
        lexical = os.path.normpath(target)
        target = os.path.relpath(lexical, link_dir)
    else:
        lexical = os.path.normpath(os.path.join(link_dir, target))
    real = os.path.realpath(path)
    if not (_is_within(lexical, str(root)) and _is_within(real, os.path.realpath(root))):
        raise PublishError(
            f"{path}: symlink to {os.readlink(path)!r} leaves the layer {root}",
            hint="layers may only link inside themselves; copy the file into the layer "
            "(cross-layer links are made on the target by postinstall.py)",
        )
    return target.replace(os.sep, "/")


def _is_within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


class _HashingWriter:
    """A write-only, non-seekable file that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._out.flush()


class _ParallelXzWriter:
    """xz compression in fixed-size chunks, each an independent xz stream, in parallel.

    Concatenated xz streams are valid `.xz` files (xz, tarfile and lzma read them). The
    output depends only on the chunk size and preset, never on the number of threads.
    """

    def __init__(self, out: _HashingWriter, *, threads: int, chunk_size: int = XZ_CHUNK_SIZE):
        self._out = out
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stacks-xz")
        self._pending: deque[Future[bytes]] = deque()
        self._max_pending = 2 * threads
        self._written_any = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) >= self._chunk_size:
            chunk = bytes(self._buffer[: self._chunk_size])
            del self._buffer[: self._chunk_size]
            self._submit(chunk)
        return len(data)

    def _submit(self, chunk: bytes) -> None:
        from stacks.children import interrupts_deferred

        with interrupts_deferred():  # never inside a pool thread's start (see there)
            self._pending.append(self._pool.submit(_xz_compress, chunk))
        self._written_any = True
        while len(self._pending) > self._max_pending:
            self._out.write(self._pending.popleft().result())

    def abort(self) -> None:
        """Drop what is not compressed yet (the archive is being abandoned): return at once.

        Chunks already being compressed cannot be stopped; their threads end on their own.
        """
        self._buffer.clear()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        try:
            if self._buffer or not self._written_any:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _xz_compress(chunk: bytes) -> bytes:
    return lzma.compress(chunk, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)


def _thread_count(threads: int | None) -> int:
    if threads is not None:
        return max(1, threads)
    count = os.process_cpu_count() if hasattr(os, "process_cpu_count") else os.cpu_count()
    return max(1, min(count or 1, 32))  # each xz preset-6 compressor needs ~100 MB


@contextlib.contextmanager
def _compressed(fmt: str, out: _HashingWriter, threads: int) -> Iterator[Any]:
    """A writable stream compressing into `out` in format `fmt` (tar formats only)."""
    if fmt == "tar.xz":
        xz = _ParallelXzWriter(out, threads=threads)
        try:
            yield xz
        except BaseException:
            # Interrupted or failed: finishing the compression first would delay the clean-up
            # by seconds (and past a worker's grace period, leave the temporary file behind).
            xz.abort()
            raise
        xz.close()
    elif fmt == "tar.zst":
        # Multi-threaded zstd output is the same for any thread count >= 1 (never use 0).
        compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, threads=threads, write_checksum=True
        )
        with compressor.stream_writer(out, closefd=False) as zst:  # type: ignore[arg-type]
            yield zst
    elif fmt == "tar.gz":
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0
        ) as gz:  # type: ignore[arg-type]
            yield gz
    else:
        raise AssertionError(fmt)


def write_archive(
    tree: Path,
    archive: Path,
    *,
    root_name: str,
    fmt: str,
    mtime: int,
    layered: bool,
    threads: int | None = None,
    progress: ProgressFile | None = None,
    bytecode_python: Path | None = None,
) -> ArchiveResult:
    """Write a byte-reproducible archive of the layer at `tree`, atomically; return its hash.

    `progress` counts the bytes of the layer's files as they are archived. With
    `bytecode_python` (the layer's runtime interpreter), the archive also holds the
    byte-stable unchecked-hash bytecode of every `lib/` source (stacks.publish.bytecode).
    """
    if fmt not in ARCHIVE_FORMATS:
        raise PublishError(
            f"unknown archive format {fmt!r}", hint=f"use one of {', '.join(ARCHIVE_FORMATS)}"
        )
    if not root_name or root_name in (".", "..") or "/" in root_name or "\\" in root_name:
        raise PublishError(f"invalid archive root folder name {root_name!r}")
    if mtime < 0:
        raise PublishError(f"archive mtime must not be negative (got {mtime})")
    entries = layer_entries(tree, layered=layered)
    archive = Path(os.path.abspath(archive))
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Both named before they are made, inside the try: an interrupt in between leaves nothing.
    scratch = None
    if bytecode_python is not None:
        scratch = Path(tempfile.gettempdir(), f"stacks-bytecode-{os.urandom(6).hex()}")
    tmp_name = atomic.sibling_name(archive, ".tmp")
    try:
        if bytecode_python is not None and scratch is not None:
            os.mkdir(scratch, 0o700)
            entries = with_bytecode(entries, tree, root_name, bytecode_python, scratch)
        if progress is not None:
            progress.total = total_file_size(entries)
        with open(tmp_name, "xb") as handle:
            out = _HashingWriter(handle)
            if fmt == "zip":
                _write_zip(out, entries, root_name, mtime, progress)
            else:
                with _compressed(fmt, out, _thread_count(threads)) as sink:
                    _write_tar(sink, entries, root_name, mtime, progress)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, archive)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise PublishError(
                f"cannot archive {tree} to {archive}: {exc}", hint=os_error_hint(exc)
            ) from exc
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return ArchiveResult(archive, out.size, out.sha256.hexdigest())


def with_bytecode(
    entries: list[LayerEntry], tree: Path, root_name: str, python: Path, scratch: Path
) -> list[LayerEntry]:
    """`entries` plus the unchecked-hash pycs (and their `__pycache__` folders) of `lib/`."""
    from stacks.publish.bytecode import cache_tag, compile_sources

    sources = [
        e.name
        for e in entries
        if e.kind == "file" and e.name.startswith("lib/") and e.name.endswith(".py")
    ]
    if not sources:
        return entries
    pycs = compile_sources(
        python, Path(os.path.abspath(tree)), sources, root_name, scratch, cache_tag(python)
    )
    folders = {name.rsplit("/", 1)[0] for name in pycs}
    added = [LayerEntry(name, "dir", scratch / name) for name in folders]
    added += [LayerEntry(name, "file", path) for name, path in pycs.items()]
    return sorted(entries + added, key=lambda e: e.name)


def total_file_size(entries: list[LayerEntry]) -> int:
    """The bytes of the regular files among `entries` (what progress counts)."""
    total = 0
    for entry in entries:
        if entry.kind == "file":
            with contextlib.suppress(OSError):
                total += os.stat(entry.source).st_size
    return total


def _write_tar(
    sink: Any,
    entries: list[LayerEntry],
    root_name: str,
    mtime: int,
    progress: ProgressFile | None = None,
) -> None:
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(root_name, tarfile.DIRTYPE, 0o755, mtime))
        for entry in entries:
            name = f"{root_name}/{entry.name}"
            if entry.kind == "dir":
                tar.addfile(_tar_info(name, tarfile.DIRTYPE, entry.mode, mtime))
            elif entry.kind == "symlink":
                info = _tar_info(name, tarfile.SYMTYPE, entry.mode, mtime)
                info.linkname = entry.link_target or ""
                tar.addfile(info)
            else:
                with open(entry.source, "rb") as source:
                    info = _tar_info(name, tarfile.REGTYPE, entry.mode, mtime)
                    info.size = os.fstat(source.fileno()).st_size
                    tar.addfile(info, source)
                if progress is not None:
                    progress.add(info.size)


def _tar_info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_zip(
    out: _HashingWriter,
    entries: list[LayerEntry],
    root_name: str,
    mtime: int,
    progress: ProgressFile | None = None,
) -> None:
    date_time = time.gmtime(max(mtime, _ZIP_EPOCH))[:6]
    # `out` cannot seek, so every entry gets a data descriptor; that is deterministic too.
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        _zip_folder(zf, _zip_info(f"{root_name}/", stat.S_IFDIR | 0o755, date_time))
        for entry in entries:
            name = f"{root_name}/{entry.name}"
            if entry.kind == "dir":
                _zip_folder(zf, _zip_info(name + "/", stat.S_IFDIR | entry.mode, date_time))
            elif entry.kind == "symlink":
                info = _zip_info(name, stat.S_IFLNK | entry.mode, date_time)
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, (entry.link_target or "").encode("utf-8"))
            else:
                info = _zip_info(name, stat.S_IFREG | entry.mode, date_time)
                with open(entry.source, "rb") as source:
                    info.file_size = os.fstat(source.fileno()).st_size
                    with zf.open(info, mode="w") as dest:
                        shutil.copyfileobj(source, dest, _COPY_CHUNK)
                if progress is not None:
                    progress.add(info.file_size)


def _zip_folder(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    info.CRC = info.compress_size = info.file_size = 0
    if hasattr(zf, "mkdir"):  # Python 3.11+: a plain header, no data descriptor
        zf.mkdir(info)
    else:
        zf.writestr(info, b"")


def _zip_info(name: str, mode: int, date_time: tuple[int, ...]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)  # type: ignore[arg-type]
    info.create_system = 3  # Unix, so external_attr carries the mode and file type
    info.external_attr = (mode & 0xFFFF) << 16
    if stat.S_ISDIR(mode):
        info.external_attr |= 0x10  # the MS-DOS directory flag
    else:
        info.compress_type = zipfile.ZIP_DEFLATED  # zlib's default level (6)
    return info


def os_error_hint(exc: OSError) -> str | None:
    """What to do about a full disk, a read-only folder or a denied write (else None)."""
    from stacks.errors import DiskError

    return DiskError.from_os_error(exc).hint
