"""Network faults, caused for real on 127.0.0.1: a package index that is closed, fails or
drops connections mid-lock, and a runtime download server that stalls, drops or lies."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import pytest
from faults import archive_runtime_spec, make_small_project, runtime_archive, snapshot
from http_server import Fault, FaultyServer
from stackrun import stacks
from wheels import build_wheel

pytestmark = pytest.mark.slow

# Keep uv quick to give up on a broken index (it retries on its own otherwise).
FAST_UV = {"UV_HTTP_RETRIES": "0", "UV_HTTP_TIMEOUT": "5"}
# And stacks' own downloads: few, short retries.
FAST_DOWNLOADS = {
    "STACKS_DOWNLOAD_RETRIES": "2",
    "STACKS_DOWNLOAD_TIMEOUT": "1",
    "STACKS_DOWNLOAD_BACKOFF": "0.05",
}
# For faults that need no timeout to show: a loaded machine may take over 1 s to serve
# the archive, and a timeout would then hide the failure the test waits for.
PATIENT_DOWNLOADS = {**FAST_DOWNLOADS, "STACKS_DOWNLOAD_TIMEOUT": "30"}

LOCAL_INDEX_STACK = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = ["tinypkg"]
"""


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_index(server: FaultyServer, wheels: list[Path], **faults: list[Fault]) -> str:
    """A PEP 503 simple index of `wheels` on the server; `faults` by project page name."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        projects.setdefault(wheel.name.split("-")[0].replace("_", "-"), []).append(wheel)
    for name, files in projects.items():
        links = []
        for wheel in files:
            data = wheel.read_bytes()
            url = server.serve(f"/files/{wheel.name}", data)
            digest = hashlib.sha256(data).hexdigest()
            links.append(f'<a href="{html.escape(url)}#sha256={digest}">{wheel.name}</a>')
        page = f"<html><body>{''.join(links)}</body></html>".encode()
        server.serve(
            f"/simple/{name}/", page, faults=faults.get(name, []), content_type="text/html"
        )
    return server.url("/simple/")


@pytest.fixture
def locked_with_local_index(tmp_path: Path, http_server: FaultyServer) -> tuple[Path, Path]:
    """A one-layer stack locked from a local index (tinypkg -> tinydep); (spec, wheel dir)."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinypkg", "1.0", requires=["tinydep"])
    build_wheel(wheels, "tinydep", "1.0")
    index = _serve_index(http_server, sorted(wheels.glob("*.whl")))
    spec = make_small_project(tmp_path / "stack", LOCAL_INDEX_STACK)
    env = {**FAST_UV, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    stacks("lock", spec, "--index-url", index, env=env)
    return spec, wheels


def _assert_lock_failed_cleanly(out: object, spec: Path, before: dict[str, str]) -> str:
    code, stderr = out.code, out.stderr  # type: ignore[attr-defined]
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "lock:cpython-3.12" in stderr and "cpython-3.12" in stderr
    assert "hint: check the index URL" in stderr, stderr
    assert snapshot(spec.parent / "requirements") == before  # the previous lock, untouched
    return stderr


def test_lock_against_a_closed_port_keeps_the_previous_lock(
    locked_with_local_index: tuple[Path, Path], tmp_path: Path
) -> None:
    spec, _ = locked_with_local_index
    before = snapshot(spec.parent / "requirements")
    bad = f"http://127.0.0.1:{_closed_port()}/simple/"
    env = {**FAST_UV, "UV_CACHE_DIR": str(tmp_path / "fresh-uv-cache")}
    out = stacks("lock", spec, "--index-url", bad, check=False, env=env)
    stderr = _assert_lock_failed_cleanly(out, spec, before)
    assert "could not be read" in stderr, stderr
    assert "127.0.0.1" in stderr and ("onnect" in stderr or "refused" in stderr), stderr


@pytest.mark.parametrize(
    "fault", [Fault.error(500), Fault.drop(after=20)], ids=["http-500", "dropped-connection"]
)
def test_index_failing_mid_lock_keeps_the_previous_lock(
    locked_with_local_index: tuple[Path, Path], tmp_path: Path, fault: Fault
) -> None:
    spec, wheels = locked_with_local_index
    before = snapshot(spec.parent / "requirements")
    with FaultyServer() as broken:
        # The first page is served, the dependency's page then fails on every request.
        index = _serve_index(broken, sorted(wheels.glob("*.whl")), tinydep=[fault] * 20)
        env = {**FAST_UV, "UV_CACHE_DIR": str(tmp_path / "fresh-uv-cache")}
        out = stacks("lock", spec, "--index-url", index, check=False, env=env)
        assert [h.status for h in broken.hits("/simple/tinypkg/")][:1] == [200]
        assert broken.hits("/simple/tinydep/"), "the failing page was never asked for"
    stderr = _assert_lock_failed_cleanly(out, spec, before)
    assert "could not be read" in stderr and "/simple/tinydep/" in stderr, stderr


@pytest.fixture(scope="module")
def served_runtime(tmp_path_factory: pytest.TempPathFactory, local_runtime: object) -> bytes:
    """The local runtime as a python-build-standalone-shaped tar.gz."""
    runtime, _ = local_runtime  # type: ignore[misc]
    return runtime_archive(runtime)


def _runtime_project(folder: Path, url: str, data: bytes) -> Path:
    spec = archive_runtime_spec(url, hashlib.sha256(data).hexdigest())
    return make_small_project(folder, spec)


def _cached_files(downloads: Path) -> list[str]:
    return sorted(
        p.relative_to(downloads).as_posix()
        for p in downloads.rglob("*")
        if p.is_file() and "locks" not in p.parts
    )


@pytest.mark.parametrize(
    "faults",
    [
        [Fault.truncate(after=300_000)],
        [Fault.drop(after=1_000_000), Fault.error(503)],
        [Fault.stall(after=100_000, seconds=3)],
    ],
    ids=["cut-then-resumed", "dropped-then-503", "stalled"],
)
def test_runtime_download_recovers(
    tmp_path: Path, http_server: FaultyServer, served_runtime: bytes, faults: list[Fault]
) -> None:
    url = http_server.serve("/cpython.tar.gz", served_runtime, faults=faults)
    spec = _runtime_project(tmp_path / "stack", url, served_runtime)
    # Only the stall needs the short timeout to show.
    env = FAST_DOWNLOADS if faults[0].kind == "stall" else PATIENT_DOWNLOADS
    out = stacks("build", spec, "--json", env=env)
    assert out.statuses()["build:cpython-3.12"] == "ran"
    hits = http_server.hits("/cpython.tar.gz")
    assert len(hits) >= 2
    if faults[0].kind == "truncate":
        assert hits[-1].status == 206 and hits[-1].range == "bytes=300000-"  # resumed
    downloads = spec.parent / "cache" / "downloads"
    digest = hashlib.sha256(served_runtime).hexdigest()
    assert _cached_files(downloads) == [
        f"sha256/{digest}/.verified.json",
        f"sha256/{digest}/cpython.tar.gz",
    ]


@pytest.mark.parametrize(
    ("always", "message"),
    [
        (Fault.wrong_bytes(), "checksum mismatch"),
        (Fault.error(500), "failed after 3 attempts"),
        (Fault.drop(after=0), "failed after 3 attempts"),
    ],
    ids=["wrong-bytes", "http-500", "dropped"],
)
def test_runtime_download_fails_clearly_and_caches_nothing(
    tmp_path: Path, http_server: FaultyServer, served_runtime: bytes, always: Fault, message: str
) -> None:
    url = http_server.serve("/cpython.tar.gz", served_runtime, always=always)
    spec = _runtime_project(tmp_path / "stack", url, served_runtime)
    out = stacks("build", spec, check=False, env=PATIENT_DOWNLOADS)
    assert out.code == 1 and "Traceback" not in out.stderr
    assert "runtime:cpython-3.12" in out.stderr and message in out.stderr, out.stderr
    assert "hint:" in out.stderr
    downloads = spec.parent / "cache" / "downloads"
    assert [f for f in _cached_files(downloads) if not f.startswith("partial/")] == []
    assert not (spec.parent / "cache" / "runtimes" / "cpython-3.12").exists()
