"""Downloads into a content-addressed cache: streamed, retried, resumed, verified, shared.

Layout of a download folder (it may be shared by several projects and processes):

    sha256/<hex>/<file name>       a published file; its bytes hash to <hex>
    sha256/<hex>/.verified.json    size, mtime and inode the file had when it was verified
    partial/<hex>.part             an unfinished download, kept so the next attempt can resume
    locks/<hex>.lock               held while a process fetches or repairs <hex>

A file is published (renamed into `sha256/<hex>/`) only after its full sha256 matched, so
nothing half-written or corrupt is ever returned. Checking a cached file is cheap: one stat
compared with the marker written at publish time. Any rewrite, truncation or copy changes
the size, mtime (backdated at publish time, so even an immediate rewrite shows) or inode;
then, or when the marker is missing, the file is fully re-hashed and either re-marked or
thrown away. Bit rot that keeps all three intact is not caught: that is the price of not
re-reading a 100 MB archive on every no-op run.

Settings (each overridable per call): STACKS_DOWNLOAD_RETRIES (retries after the first
attempt, default 4), STACKS_DOWNLOAD_TIMEOUT (seconds for connecting and for each read,
default 30), STACKS_DOWNLOAD_BACKOFF (first pause between attempts, doubled each time up to
30 s, default 1). A failed attempt that still brought new bytes does not use up a retry,
so a long download over a connection that keeps dropping still finishes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from stacks import atomic
from stacks.errors import RuntimeFetchError

CHUNK = 256 * 1024
MAX_BACKOFF = 30.0
MAX_ATTEMPTS = 100  # hard stop even when every attempt makes some progress
RETRY_STATUSES = frozenset({408, 425, 429})
HINT = (
    "check the URL and the network; STACKS_DOWNLOAD_RETRIES and STACKS_DOWNLOAD_TIMEOUT "
    "make stacks more patient, and STACKS_PYTHON_MIRROR fetches runtimes from a mirror"
)


@dataclass(frozen=True)
class DownloadSettings:
    """How hard to try: retries after the first attempt, timeout per read, first backoff."""

    retries: int = 4
    timeout: float = 30.0
    backoff: float = 1.0

    @classmethod
    def resolve(
        cls,
        *,
        retries: int | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
    ) -> DownloadSettings:
        """Explicit values, else STACKS_DOWNLOAD_* from the environment, else the defaults."""
        return cls(
            retries=retries if retries is not None else _env("STACKS_DOWNLOAD_RETRIES", 4, int),
            timeout=timeout if timeout is not None else _env("STACKS_DOWNLOAD_TIMEOUT", 30.0),
            backoff=backoff if backoff is not None else _env("STACKS_DOWNLOAD_BACKOFF", 1.0),
        )


def download(
    url: str,
    sha256: str,
    download_dir: Path,
    *,
    progress: bool | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    backoff: float | None = None,
) -> Path:
    """Return the cached file for `sha256`, fetching it from `url` (http, https, file) first if needed."""
    digest = _normalise_digest(sha256, url)
    cached = cached_download(download_dir, digest)
    if cached is not None:
        return cached
    settings = DownloadSettings.resolve(retries=retries, timeout=timeout, backoff=backoff)
    show = sys.stderr.isatty() if progress is None else progress
    import filelock

    lock = filelock.FileLock(str(download_dir / "locks" / f"{digest}.lock"))
    (download_dir / "locks").mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0.5)
    except filelock.Timeout:
        if show:
            print(f"waiting for another process downloading {url}", file=sys.stderr)
        lock.acquire()
    try:
        cached = _repair_cached(download_dir, digest)
        if cached is not None:
            return cached
        partial = download_dir / "partial" / f"{digest}.part"
        partial.parent.mkdir(parents=True, exist_ok=True)
        if urlsplit(url).scheme == "file":
            _copy_local(url, digest, partial)
        else:
            _fetch_http(url, digest, partial, settings, _Progress(_file_name(url), show))
        return _publish(download_dir, digest, partial, _file_name(url))
    finally:
        lock.release()


def cached_download(download_dir: Path, sha256: str) -> Path | None:
    """The published file for this digest if its verification marker still matches it."""
    entry = download_dir / "sha256" / sha256.lower()
    try:
        marker = json.loads((entry / ".verified.json").read_text(encoding="utf-8"))
        path = entry / marker["name"]
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns, stat.st_ino) == (
            marker["size"],
            marker["mtime_ns"],
            marker["inode"],
        ):
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, streamed."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            hasher.update(block)
    return hasher.hexdigest()


def _repair_cached(download_dir: Path, digest: str) -> Path | None:
    """Under the lock: trust the marker, else re-hash what is there, keep it or throw it away."""
    cached = cached_download(download_dir, digest)
    if cached is not None:
        return cached
    entry = download_dir / "sha256" / digest
    if not entry.is_dir():
        return None
    for path in sorted(entry.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.is_symlink():
            continue
        if sha256_file(path) == digest:
            _write_marker(entry, path)
            return path
    atomic.remove_tree(entry)
    return None


def _publish(download_dir: Path, digest: str, partial: Path, name: str) -> Path:
    entry = download_dir / "sha256" / digest
    entry.mkdir(parents=True, exist_ok=True)
    final = entry / name
    os.replace(partial, final)
    _write_marker(entry, final)
    return final


def _write_marker(entry: Path, path: Path) -> None:
    """Record the verified file's identity, after backdating its mtime.

    File timestamps come from a coarse clock (milliseconds), so a rewrite right after
    publishing could keep the same mtime. Backdating by two seconds makes any later write,
    however soon, leave a different mtime behind.
    """
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, time.time_ns() - 2_000_000_000))
    stat = path.stat()
    marker = {
        "name": path.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
    }
    atomic.write_json(entry / ".verified.json", marker)


def _copy_local(url: str, digest: str, partial: Path) -> None:
    from urllib.request import url2pathname  # pulls in http.client: only when needed

    source = Path(url2pathname(unquote(urlsplit(url).path)))
    try:
        with source.open("rb") as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            _sync(dst)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise RuntimeFetchError(
            f"could not read {url}: {exc.strerror or exc}",
            hint="check that the file exists and is readable",
        ) from None
    _check_digest(url, digest, sha256_file(partial), partial, attempts=None)


def _check_digest(
    url: str, digest: str, actual: str, partial: Path, *, attempts: int | None
) -> None:
    """Keep `partial` if it hashed to `digest`; otherwise delete it and say so."""
    if actual == digest:
        return
    size = partial.stat().st_size
    partial.unlink()
    after = f" (after {attempts} attempt{'s' if attempts != 1 else ''})" if attempts else ""
    raise RuntimeFetchError(
        f"checksum mismatch for {url}{after}: expected sha256 {digest}, got {actual} "
        f"({size} bytes); nothing was cached",
        hint="the file at this URL is not the one the sha256 describes: fix the URL or the "
        "sha256, or, if a mirror is in use, check that it serves the same files",
    )


class _Retryable(Exception):
    """An attempt failed in a way that another attempt may fix."""


def _fetch_http(
    url: str, digest: str, partial: Path, settings: DownloadSettings, bar: _Progress
) -> None:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "stacks (python-requests)"
    attempts = failures = 0
    restarted = False
    delay = settings.backoff
    try:
        while True:
            attempts += 1
            before = _size(partial)
            try:
                resumed = _attempt(session, url, partial, settings, bar)
            except _Retryable as exc:
                progressed = _size(partial) > before
                failures += 0 if progressed else 1
                if failures > settings.retries or attempts >= MAX_ATTEMPTS:
                    raise RuntimeFetchError(
                        f"download of {url} failed after {attempts} attempt"
                        f"{'s' if attempts != 1 else ''}: {exc}",
                        hint=HINT,
                    ) from None
                delay = settings.backoff if progressed else delay
                bar.note(f"{exc}; retrying in {delay:g} s")
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            actual = sha256_file(partial)
            if actual != digest and resumed and not restarted:
                # The kept bytes were stale or damaged: start once more from nothing.
                partial.unlink()
                restarted = True
                continue
            _check_digest(url, digest, actual, partial, attempts=attempts)
            return
    finally:
        bar.finish()
        session.close()


def _attempt(
    session: Any, url: str, partial: Path, settings: DownloadSettings, bar: _Progress
) -> bool:
    """One GET, appending to `partial` when the server resumes; return whether it resumed."""
    import requests
    import urllib3

    have = _size(partial)
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with session.get(
            url, headers=headers, stream=True, timeout=(settings.timeout, settings.timeout)
        ) as response:
            resumed = _check_response(url, response, have, partial)
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            bar.start(total, have)
            with partial.open("ab" if resumed else "wb") as out:
                for block in response.raw.stream(CHUNK, decode_content=False):
                    _write(out, block, partial)
                    bar.advance(len(block))
                _sync(out)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _Retryable(_describe(exc, settings.timeout)) from None
    got = _size(partial)
    if total is not None and got != total:
        raise _Retryable(f"connection closed after {got} of {total} bytes")
    return resumed


def _check_response(url: str, response: Any, have: int, partial: Path) -> bool:
    """Classify an answer: True to append, False to start over; raise on failure."""
    status = response.status_code
    if status == 416 and have:
        partial.unlink()
        raise _Retryable("the server could not resume the download (HTTP 416)")
    if status >= 500 or status in RETRY_STATUSES:
        raise _Retryable(f"HTTP {status} {response.reason or ''}".rstrip())
    if status >= 400:
        raise RuntimeFetchError(
            f"download of {url} failed: HTTP {status} {response.reason or ''}".rstrip(),
            hint="check the URL (and the mirror setting, if one is in use)",
        )
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = re.match(r"bytes (\d+)-", content_range)
        if not match or int(match.group(1)) != have:
            partial.unlink()
            raise _Retryable(f"the server resumed at the wrong place ({content_range!r})")
        return True
    if status != 200:
        raise RuntimeFetchError(
            f"download of {url} failed: unexpected HTTP {status}", hint="check the URL"
        )
    return False


def _write(out: IO[bytes], block: bytes, partial: Path) -> None:
    try:
        out.write(block)
    except OSError as exc:
        raise RuntimeFetchError(
            f"could not write {partial}: {exc.strerror or exc}",
            hint="check free disk space and permissions of the download cache",
        ) from None


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _describe(exc: BaseException, timeout: float) -> str:
    """A one-line reason, taken from the innermost cause (urllib3 nests them deeply)."""
    import requests
    import urllib3

    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return f"no answer from the server for {timeout:g} s (timed out)"
    root: BaseException = exc
    for _ in range(10):
        inner = root.__cause__ or next(
            (a for a in reversed(root.args) if isinstance(a, BaseException)), None
        )
        if inner is None:
            break
        root = inner
    if isinstance(root, urllib3.exceptions.IncompleteRead):
        return f"the connection closed early ({root.partial} bytes read, {root.expected} more expected)"
    if isinstance(root, OSError) and root.strerror:
        return f"connection failed: {root.strerror.lower()}"
    return f"connection failed: {root}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _file_name(url: str) -> str:
    """A safe local file name taken from the last path segment of `url`."""
    last = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = re.sub(r"[^A-Za-z0-9._+@-]", "_", last).lstrip(".")
    return name or "download"


def _normalise_digest(sha256: str, url: str) -> str:
    digest = sha256.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RuntimeFetchError(
            f"invalid sha256 {sha256!r} for {url}",
            hint="give the 64 hex digits of the file's sha256",
        )
    return digest


def _env(name: str, default: Any, kind: type = float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise RuntimeFetchError(
            f"{name}={raw!r} is not a valid setting", hint=f"set {name} to a non-negative number"
        )
    return value


class _Progress:
    """A one-line progress display on stderr (bytes, percent, rate), or nothing."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled = name, enabled
        self.total: int | None = None
        self.done = self.started_at_bytes = 0
        self.started = self.shown = 0.0
        self.drawn = False

    def start(self, total: int | None, done: int) -> None:
        self.total, self.done, self.started_at_bytes = total, done, done
        self.started = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self.shown >= 0.2:
            self.shown = now
            self._draw(now)

    def note(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(("\n" if self.drawn else "") + f"  {text}\n")
            sys.stderr.flush()
            self.drawn = False

    def finish(self) -> None:
        if self.enabled and self.started:
            self._draw(time.monotonic())
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self, now: float) -> None:
        rate = (self.done - self.started_at_bytes) / max(now - self.started, 1e-3)
        size = _human(self.done)
        if self.total:
            size += f" / {_human(self.total)} ({100 * self.done // self.total}%)"
        sys.stderr.write(f"\r  {self.name}: {size}, {_human(rate)}/s\x1b[K")
        sys.stderr.flush()
        self.drawn = True


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
