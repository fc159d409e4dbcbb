"""Runtimes and downloads against real interpreters and a real, misbehaving HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from http_server import Fault, FaultyServer

from stacks.errors import RuntimeFetchError
from stacks.runtime.downloads import cached_download, download
from stacks.runtime.relocation import ELF_MAGIC, patchelf_binary
from stacks.runtime.sources import (
    PBS_RELEASES,
    ProvidedRuntime,
    find_local_interpreter,
    mirror_url,
    pbs_release,
    provide_runtime,
    requested_version,
)
from stacks.runtime.unpack import unpack_archive
from stacks.spec import RuntimeSource

FAST = {"retries": 2, "timeout": 0.5, "backoff": 0.01}  # fault tests finish in seconds
PYENV_VERSIONS = Path.home() / ".pyenv" / "versions"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """provide_runtime reads the download settings from the environment."""
    monkeypatch.setenv("STACKS_DOWNLOAD_RETRIES", "2")
    monkeypatch.setenv("STACKS_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("STACKS_DOWNLOAD_BACKOFF", "0.01")


def payload(size: int = 3_000_000) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def cache_files(download_dir: Path) -> list[str]:
    """Every file published in or pending for the cache (lock files aside)."""
    found = []
    for sub in ("sha256", "partial"):
        found += [p.relative_to(download_dir).as_posix() for p in (download_dir / sub).rglob("*")]
    return sorted(f for f in found if not (download_dir / f).is_dir())


def tar_tree(src: Path, dest: Path, *, top: str | None = "python", compression: str = "gz") -> str:
    """Archive `src` (under `top/`, or at the root) as tar.gz/xz/zst; return its sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            tar.add(path, arcname=f"{top}/{rel}" if top else rel, recursive=False)
    raw = buffer.getvalue()
    if compression == "gz":
        import gzip

        data = gzip.compress(raw, compresslevel=1)
    elif compression == "xz":
        import lzma

        data = lzma.compress(raw, preset=0)
    else:
        data = zstandard.ZstdCompressor(level=3).compress(raw)
    dest.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def runtime_archive(
    local_runtime: tuple[Path, ProvidedRuntime], tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, str]:
    """The local runtime as a python-build-standalone-style `python/...` .tar.gz: (bytes, sha256).

    Like a real install_only archive it also carries what stacks must strip: pip in
    site-packages and bin/, other scripts, man pages, test suites and bytecode caches.
    """
    folder = tmp_path_factory.mktemp("archive")
    tree = folder / "tree"
    shutil.copytree(local_runtime[0], tree, symlinks=True)
    stdlib = tree / "lib" / "python3.12"
    extras = {
        "bin/pip3": "#!/install/bin/python3.12\nimport pip\n",
        "bin/python3.12-config": "#!/bin/sh\necho\n",
        "lib/python3.12/site-packages/pip/__init__.py": "",
        "lib/python3.12/site-packages/README.txt": "",
        "lib/python3.12/test/test_os.py": "",
        "lib/python3.12/__pycache__/os.cpython-312.pyc": "",
        "lib/libpython3.12.a": "",
        "share/man/man1/python3.12.1": "",
    }
    for rel, text in extras.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "bin" / "pip").symlink_to("pip3")
    assert stdlib.is_dir()
    archive = folder / "cpython-local.tar.gz"
    sha256 = tar_tree(tree, archive)
    return archive.read_bytes(), sha256


def run_python(
    python: Path, code: str, *, cwd: Path | str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` with `python` in `cwd`, isolated, writing no bytecode into the runtime."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [str(python), "-I", "-B", "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        check=False,
    )


# --- python-build-standalone table and mirror -------------------------------------------


def test_requested_version_accepts_cpython_only() -> None:
    assert requested_version("cpython@3.12") == "3.12"
    assert requested_version("cpython@3.12.1") == "3.12.1"
    with pytest.raises(RuntimeFetchError, match=r"cpython@X\.Y"):
        requested_version("pypy@3.10")


def test_pbs_release_picks_the_newest_patch_of_a_minor() -> None:
    newest = pbs_release("3.12")
    micros = []
    for micro in range(60):
        with contextlib.suppress(RuntimeFetchError):
            micros.append(int(pbs_release(f"3.12.{micro}").python_version.split(".")[2]))
    assert newest.python_version == f"3.12.{max(micros)}"
    assert newest.url.startswith(PBS_RELEASES + "/")
    assert "install_only" in newest.url
    assert re.fullmatch(r"[0-9a-f]{64}", newest.sha256)


def test_pbs_release_exact_version() -> None:
    release = pbs_release("3.12.1")
    assert release.python_version == "3.12.1"
    assert "/cpython-3.12.1%2B" in release.url
    assert release.url.endswith(".tar.gz") and "install_only" in release.url


def test_pbs_release_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(RuntimeFetchError, match=r"no CPython 3\.99 install_only build") as info:
        pbs_release("3.99")
    assert info.value.hint and "source = 'local'" in info.value.hint


def test_mirror_replaces_the_release_prefix_only() -> None:
    url = pbs_release("3.12.1").url
    tail = url[len(PBS_RELEASES) :]
    assert mirror_url(url, None) == url
    assert mirror_url(url, "https://mirror.example/pbs/") == "https://mirror.example/pbs" + tail
    with pytest.raises(RuntimeFetchError, match="cannot apply the mirror"):
        mirror_url("https://example.com/other.tar.gz", "https://mirror.example")


def test_pbs_source_downloads_from_the_mirror_and_checks_the_table_sha(
    http_server: FaultyServer, runtime_archive: tuple[bytes, str], tmp_path: Path
) -> None:
    release = pbs_release("3.12")
    tail = release.url[len(PBS_RELEASES) :]
    from urllib.parse import unquote

    http_server.serve("/pbs" + unquote(tail), runtime_archive[0])  # other bytes than pbs's
    target = tmp_path / "cpython-3.12"
    with pytest.raises(RuntimeFetchError) as info:
        provide_runtime(
            "cpython@3.12",
            RuntimeSource("python-build-standalone"),
            target,
            download_dir=tmp_path / "dl",
            mirror=http_server.url("/pbs"),
        )
    message = str(info.value)
    assert "checksum mismatch" in message
    assert http_server.url("/pbs") + tail in message  # names the mirror URL it used
    assert release.sha256 in message  # and the table's checksum
    assert [h.status for h in http_server.hits()] == [200]
    assert not target.exists() and cache_files(tmp_path / "dl") == []


# --- downloads ---------------------------------------------------------------------------


def test_download_is_verified_cached_and_reused(http_server: FaultyServer, tmp_path: Path) -> None:
    data, sha = payload()
    url = http_server.serve("/files/cpython-3.12.1+2024-x86_64.tar.gz", data)
    path = download(url, sha, tmp_path, progress=False, **FAST)
    assert path == tmp_path / "sha256" / sha / "cpython-3.12.1+2024-x86_64.tar.gz"
    assert path.read_bytes() == data
    assert download(url, sha.upper(), tmp_path, progress=False, **FAST) == path
    assert len(http_server.hits()) == 1  # the second call never touched the network
    assert cached_download(tmp_path, sha) == path


def test_checksum_mismatch_is_clear_and_caches_nothing(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, always=Fault.wrong_bytes())
    with pytest.raises(RuntimeFetchError) as info:
        download(url, sha, tmp_path, progress=False, **FAST)
    message = str(info.value)
    assert (
        url in message and f"expected sha256 {sha}" in message and "nothing was cached" in message
    )
    assert cache_files(tmp_path) == []
    assert len(http_server.hits()) == 1  # wrong bytes from a fresh download are not retried


def test_server_errors_then_recovery(http_server: FaultyServer, tmp_path: Path) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, faults=[Fault.error(500), Fault.error(503)])
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert [h.status for h in http_server.hits()] == [500, 503, 200]


def test_always_failing_server_gives_up_with_a_clear_error(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload(1000)
    url = http_server.serve("/f.tar.gz", data, always=Fault.error(502))
    with pytest.raises(RuntimeFetchError) as info:
        download(url, sha, tmp_path, progress=False, **FAST)
    assert f"download of {url} failed after 3 attempts: HTTP 502" in str(info.value)
    assert "STACKS_DOWNLOAD_RETRIES" in (info.value.hint or "")
    assert len(http_server.hits()) == 3
    assert cache_files(tmp_path) == []


def test_client_errors_are_not_retried(http_server: FaultyServer, tmp_path: Path) -> None:
    url = http_server.url("/missing.tar.gz")
    with pytest.raises(RuntimeFetchError, match="failed: HTTP 404"):
        download(url, "0" * 64, tmp_path, progress=False, **FAST)
    assert len(http_server.hits()) == 1


def test_refused_connection_is_retried_then_reported(tmp_path: Path) -> None:
    with FaultyServer() as server:
        url = server.url("/f.tar.gz")  # the port is closed once the server is gone
    with pytest.raises(RuntimeFetchError, match=r"after 3 attempts: connection failed: .*refused"):
        download(url, "0" * 64, tmp_path, progress=False, **FAST)


def test_truncated_transfer_resumes_with_range(http_server: FaultyServer, tmp_path: Path) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, faults=[Fault.truncate(after=1_000_000)])
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    hits = http_server.hits()
    assert [(h.status, h.range, h.sent) for h in hits] == [
        (200, None, 1_000_000),
        (206, "bytes=1000000-", 2_000_000),
    ]


def test_truncated_transfer_without_range_support_starts_over(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve(
        "/f.tar.gz", data, faults=[Fault.truncate(after=1_000_000)], honour_range=False
    )
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert [(h.status, h.sent) for h in http_server.hits()] == [(200, 1_000_000), (200, len(data))]


def test_always_truncating_server_fails_without_publishing(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload(1_000_000)
    url = http_server.serve("/f.tar.gz", data, always=Fault.truncate(after=0), honour_range=False)
    with pytest.raises(RuntimeFetchError, match=r"failed after 3 attempts: .*closed"):
        download(url, sha, tmp_path, progress=False, **FAST)
    assert not (tmp_path / "sha256").exists() or cache_files(tmp_path) == []


def test_dropped_connection_is_retried(http_server: FaultyServer, tmp_path: Path) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, faults=[Fault.drop(after=500_000)] * 2)
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert [h.fault for h in http_server.hits()] == ["drop", "drop", None]


def test_stalled_server_times_out_and_the_retry_resumes(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, faults=[Fault.stall(after=1_000_000, seconds=1.5)])
    started = time.monotonic()
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert time.monotonic() - started < 1.4  # gave up on the stall after the 0.5 s timeout
    stalled, resumed = http_server.hits()
    assert (stalled.status, stalled.fault) == (200, "stall")
    assert resumed.status == 206 and resumed.range and resumed.range.startswith("bytes=")


def test_always_stalling_server_reports_the_timeout(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    url = http_server.serve("/f.tar.gz", b"x" * 1000, always=Fault.stall(after=0, seconds=2))
    with pytest.raises(RuntimeFetchError, match=r"after 3 attempts: no answer .* 0\.5 s"):
        download(url, "0" * 64, tmp_path, progress=False, **FAST)


_DOWNLOAD_IN_CHILD = """
import sys
from pathlib import Path
from stacks.runtime.downloads import download
print(download(sys.argv[1], sys.argv[2], Path(sys.argv[3]), progress=False, timeout=30))
"""


def test_interrupted_download_is_never_used_and_resumes_next_run(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, faults=[Fault.stall(after=1_000_000, seconds=30)])
    child = subprocess.Popen([sys.executable, "-c", _DOWNLOAD_IN_CHILD, url, sha, str(tmp_path)])
    partial = tmp_path / "partial" / f"{sha}.part"
    deadline = time.monotonic() + 20
    while not (partial.exists() and partial.stat().st_size >= 500_000):
        assert time.monotonic() < deadline, "the child never wrote its partial file"
        time.sleep(0.02)
    time.sleep(0.2)  # the server has stalled; the child waits for more
    child.send_signal(signal.SIGKILL)  # an interrupted run, as hard as it gets
    child.wait()
    kept = partial.stat().st_size
    assert 0 < kept <= 1_000_000
    assert cache_files(tmp_path) == [f"partial/{sha}.part"]  # nothing was published
    assert cached_download(tmp_path, sha) is None

    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    resumed = http_server.hits(settle=0)[-1]
    assert (resumed.status, resumed.range) == (206, f"bytes={kept}-")
    assert cache_files(tmp_path) == [f"sha256/{sha}/.verified.json", f"sha256/{sha}/f.tar.gz"]


def test_corrupt_partial_file_is_discarded_not_used(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / f"{sha}.part").write_bytes(os.urandom(1_000_000))  # stale garbage
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert [(h.status, h.range) for h in http_server.hits()] == [
        (206, "bytes=1000000-"),  # resumed the garbage, the checksum caught it...
        (200, None),  # ...so it started over from nothing
    ]


def test_damaged_cache_file_is_rehashed_and_fetched_again(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data)
    path = download(url, sha, tmp_path, progress=False, **FAST)
    (path.parent / ".verified.json").unlink()  # marker lost: re-hash, still good, no fetch
    assert download(url, sha, tmp_path, progress=False, **FAST) == path
    assert len(http_server.hits()) == 1
    path.write_bytes(data[:-1] + b"!")  # damaged in place: the stat no longer matches
    assert download(url, sha, tmp_path, progress=False, **FAST).read_bytes() == data
    assert len(http_server.hits()) == 2


def test_two_processes_share_one_download(http_server: FaultyServer, tmp_path: Path) -> None:
    data, sha = payload()
    url = http_server.serve("/f.tar.gz", data, always=Fault.slow(seconds=1.0))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _DOWNLOAD_IN_CHILD, url, sha, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs[0] == outputs[1] == str(tmp_path / "sha256" / sha / "f.tar.gz")
    assert Path(outputs[0]).read_bytes() == data
    assert len(http_server.hits()) == 1  # the second process waited for the first one's file


def test_progress_is_shown_only_when_asked_or_on_a_terminal(
    http_server: FaultyServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data, sha = payload()
    url = http_server.serve(
        "/f.tar.gz", data, faults=[Fault.error(503)], always=Fault.slow(seconds=0.5)
    )
    download(url, sha, tmp_path / "a", progress=True, **FAST)
    out, err = capfd.readouterr()
    assert out == ""
    assert "f.tar.gz" in err and "MiB / 2.9 MiB (100%)" in err and "/s" in err
    assert "HTTP 503 Service Unavailable; retrying in 0.01 s" in err
    download(url, sha, tmp_path / "b", **FAST)  # stderr is not a terminal under pytest
    assert capfd.readouterr() == ("", "")


def test_file_urls_are_verified_and_cached(tmp_path: Path) -> None:
    data, sha = payload(10_000)
    source = tmp_path / "my archive.tar.gz"
    source.write_bytes(data)
    path = download(source.as_uri(), sha, tmp_path / "dl")
    assert path.read_bytes() == data and path.name == "my_archive.tar.gz"
    with pytest.raises(RuntimeFetchError, match="checksum mismatch"):
        download(source.as_uri(), "1" * 64, tmp_path / "dl")
    with pytest.raises(RuntimeFetchError, match="could not read"):
        download((tmp_path / "nope.tar.gz").as_uri(), "1" * 64, tmp_path / "dl")


def test_bad_settings_and_digests_are_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RuntimeFetchError, match="invalid sha256"):
        download("https://example.invalid/x.tar.gz", "abc", tmp_path)
    monkeypatch.setenv("STACKS_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(RuntimeFetchError, match="STACKS_DOWNLOAD_TIMEOUT='soon'"):
        download("https://example.invalid/x.tar.gz", "0" * 64, tmp_path)


def test_retry_count_comes_from_the_environment(
    http_server: FaultyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKS_DOWNLOAD_RETRIES", "0")
    url = http_server.serve("/f.tar.gz", b"x", always=Fault.error(500))
    with pytest.raises(RuntimeFetchError, match="after 1 attempt: HTTP 500"):
        download(url, "0" * 64, tmp_path, progress=False)
    assert len(http_server.hits()) == 1


def test_importing_runtimes_does_not_import_requests() -> None:
    code = "import sys, stacks.runtime.sources; print(sorted({'requests', 'pbs_installer'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --- unpacking ---------------------------------------------------------------------------


def _evil_archive(path: Path, *members: tuple[str, str, str]) -> None:
    """A tar.gz of (name, kind, link target) members; kind is file, dir, sym, hard, chr, fifo."""
    types = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE}
    types |= {"fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE}
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 5
                tar.addfile(info, io.BytesIO(b"hello"))
                continue
            info.type, info.linkname = types[kind], link
            info.mode = 0o755 if kind == "dir" else 0o644
            tar.addfile(info)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("/etc/evil", "file", "")], "absolute path"),
        ([("python/../../evil", "file", "")], "'..' in its path"),
        ([("python/lib/evil", "sym", "/etc/passwd")], "outside the archive"),
        ([("python/lib/evil", "sym", "../../../etc")], "outside the archive"),
        ([("python/bin/x", "file", ""), ("python/evil", "hard", "/etc/passwd")], "hard link"),
        ([("python/evil", "hard", "python/../../secret")], "hard link"),
        ([("python/evil", "hard", "python/missing")], "hard link"),
        ([("python/dev/null", "chr", "")], "device, FIFO"),
        ([("python/fifo", "fifo", "")], "device, FIFO"),
        (  # each link looks inside on its own; together they climb out of the folder
            [("x", "sym", "."), ("c", "sym", "x"), ("d", "sym", "c/..")],
            "resolves outside",
        ),
        (  # and a file written through them would land outside
            [("x", "sym", "."), ("c", "sym", "x"), ("d", "sym", "c/.."), ("d/escape", "file", "")],
            "through a link",
        ),
    ],
)  # fmt: skip
def test_unsafe_archives_are_refused(
    tmp_path: Path, members: list[tuple[str, str, str]], why: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    _evil_archive(archive, *members)
    with pytest.raises(RuntimeFetchError, match=r"refusing to unpack evil\.tar\.gz") as info:
        unpack_archive(archive, tmp_path / "out")
    assert why in str(info.value)
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def test_unsafe_archive_leaves_no_runtime_behind(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    _evil_archive(archive, ("python/bin/python3.12", "file", ""), ("python/x", "sym", "/etc"))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    target = tmp_path / "rt" / "cpython-3.12"
    with pytest.raises(RuntimeFetchError, match="refusing to unpack"):
        provide_runtime(
            "cpython@3.12",
            RuntimeSource("archive", archive.as_uri(), sha),
            target,
            download_dir=tmp_path / "dl",
        )
    assert list((tmp_path / "rt").iterdir()) == []  # no target, no partial leftovers


@pytest.mark.parametrize("compression", ["gz", "xz", "zst"])
def test_unpack_supported_compressions(tmp_path: Path, compression: str) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "python3.12").write_bytes(b"\x7fELF fake")
    (src / "bin" / "python3.12").chmod(0o4755)  # setuid is dropped on the way in
    (src / "bin" / "python3").symlink_to("python3.12")
    archive = tmp_path / f"a.tar.{compression}"
    tar_tree(src, archive, compression=compression)
    unpack_archive(archive, tmp_path / "out")
    out = tmp_path / "out" / "python" / "bin"
    assert (out / "python3.12").read_bytes() == b"\x7fELF fake"
    assert oct((out / "python3.12").stat().st_mode & 0o7777) == oct(0o755)
    assert os.readlink(out / "python3") == "python3.12"


def test_damaged_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + os.urandom(1000))
    with pytest.raises(RuntimeFetchError, match=r"could not unpack broken\.tar\.gz"):
        unpack_archive(archive, tmp_path / "out")


# --- runtimes from archives --------------------------------------------------------------


def check_runtime_shape(root: Path, xy: str) -> None:
    """The python-build-standalone install_only shape of docs/internals.md."""
    names = {p.name: p for p in (root / "bin").iterdir()}
    assert set(names) == {f"python{xy}", "python3", "python"}
    assert names[f"python{xy}"].is_file() and not names[f"python{xy}"].is_symlink()
    assert os.readlink(names["python3"]) == os.readlink(names["python"]) == f"python{xy}"
    assert list((root / "lib" / f"python{xy}" / "site-packages").iterdir()) == []
    assert (root / "lib" / f"python{xy}" / "os.py").is_file()
    assert not (root / "share").exists()
    # The stdlib's own bytecode is precompiled (for the runtime's version); nothing else.
    tag = f"cpython-{xy.replace('.', '')}"
    assert (root / "lib" / f"python{xy}" / "__pycache__" / f"os.{tag}.pyc").is_file()
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if "__pycache__" in rel:
            assert rel[:2] == ("lib", f"python{xy}") and "site-packages" not in rel, rel
            assert path.is_dir() or path.name.endswith(f".{tag}.pyc"), rel
            continue
        assert not path.name.endswith((".pyc", ".a", ".o")), rel
        assert not {"test", "tests", "idle_test"} & set(rel), rel


def test_archive_runtime_from_a_server(
    http_server: FaultyServer, runtime_archive: tuple[bytes, str], tmp_path: Path
) -> None:
    data, sha = runtime_archive
    url = http_server.serve("/runtimes/cpython-local.tar.gz", data, faults=[Fault.error(503)])
    target = tmp_path / "cpython-3.12"
    provided = provide_runtime(
        "cpython@3.12",
        RuntimeSource("archive", url, sha.upper()),
        target,
        download_dir=tmp_path / "dl",
        progress=False,
    )
    assert provided.python_version.startswith("3.12.")
    assert provided.source == {"kind": "archive", "url": url, "sha256": sha}
    json.dumps(provided.source)
    check_runtime_shape(target, "3.12")
    result = run_python(target / "bin" / "python", "import sys, ssl; print(sys.prefix)", cwd="/")
    assert result.stdout.strip() == str(target), result.stderr


@pytest.mark.parametrize("compression", ["zst", "xz"])
def test_archive_runtime_at_the_root_in_other_compressions(
    local_runtime: tuple[Path, ProvidedRuntime], tmp_path: Path, compression: str
) -> None:
    archive = tmp_path / f"rt.tar.{compression}"
    sha = tar_tree(local_runtime[0], archive, top=None, compression=compression)
    target = tmp_path / "rt"
    provided = provide_runtime(
        f"cpython@{local_runtime[1].python_version}",  # the exact X.Y.Z must match too
        RuntimeSource("archive", archive.as_uri(), sha),
        target,
        download_dir=tmp_path / "dl",
    )
    assert provided.python_version == local_runtime[1].python_version
    check_runtime_shape(target, "3.12")


def test_archive_of_another_version_is_refused(
    runtime_archive: tuple[bytes, str], tmp_path: Path
) -> None:
    archive = tmp_path / "rt.tar.gz"
    archive.write_bytes(runtime_archive[0])
    with pytest.raises(RuntimeFetchError, match=r"has no bin/python3\.11 \(it has python3\.12\)"):
        provide_runtime(
            "cpython@3.11",
            RuntimeSource("archive", archive.as_uri(), runtime_archive[1]),
            tmp_path / "rt",
            download_dir=tmp_path / "dl",
        )
    assert not (tmp_path / "rt").exists()


def test_archive_without_a_runtime_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "two.tar.gz"
    _evil_archive(archive, ("a/readme", "file", ""), ("b/readme", "file", ""))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(RuntimeFetchError, match="does not hold a Python runtime"):
        provide_runtime(
            "cpython@3.12",
            RuntimeSource("archive", archive.as_uri(), sha),
            tmp_path / "rt",
            download_dir=tmp_path / "dl",
        )


def test_failed_provide_keeps_the_previous_runtime(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    target = tmp_path / "cpython-3.12"
    target.mkdir()
    (target / "previous").write_text("still here")
    url = http_server.serve("/rt.tar.gz", b"not this", always=Fault.error(500))
    with pytest.raises(RuntimeFetchError):
        provide_runtime(
            "cpython@3.12",
            RuntimeSource("archive", url, "0" * 64),
            target,
            download_dir=tmp_path / "dl",
        )
    assert (target / "previous").read_text() == "still here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpython-3.12", "dl"]


# --- local interpreters ------------------------------------------------------------------


def _fake_pyenv(tmp_path: Path, versions: dict[str, str]) -> Path:
    """A pyenv root whose `versions/<name>` link to real pyenv installs."""
    root = tmp_path / "pyenv"
    (root / "versions").mkdir(parents=True)
    (root / "shims").mkdir()
    for name, real in versions.items():
        if not (PYENV_VERSIONS / real).is_dir():
            pytest.skip(f"needs pyenv's CPython {real}")
        (root / "versions" / name).symlink_to(PYENV_VERSIONS / real)
    return root


@pytest.fixture
def isolated_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH and no uv-managed Pythons: only what a test puts there is found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-uv-pythons"))
    return empty


def test_find_local_picks_the_newest_patch_or_the_exact_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_lookup: Path
) -> None:
    root = _fake_pyenv(tmp_path, {"3.11.7": "3.11.7", "3.11.2": "3.11.7", "3.12.1": "3.12.1"})
    (root / "versions" / "3.11-dev").mkdir()  # not a release: ignored
    monkeypatch.setenv("PYENV_ROOT", str(root))
    assert find_local_interpreter("3.11") == root / "versions/3.11.7/bin/python3.11"
    assert find_local_interpreter("3.11.2") == root / "versions/3.11.2/bin/python3.11"
    with pytest.raises(RuntimeFetchError, match=r"no local CPython 3\.11\.9 .*3\.11\.2, 3\.11\.7"):
        find_local_interpreter("3.11.9")
    with pytest.raises(RuntimeFetchError, match="invalid Python version"):
        find_local_interpreter("3")


def test_local_version_is_checked_by_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_lookup: Path
) -> None:
    root = _fake_pyenv(tmp_path, {"3.11.2": "3.11.7"})  # the folder name lies
    monkeypatch.setenv("PYENV_ROOT", str(root))
    with pytest.raises(RuntimeFetchError, match=r"is CPython 3\.11\.7, not 3\.11\.2"):
        provide_runtime(
            "cpython@3.11.2", RuntimeSource("local"), tmp_path / "rt", download_dir=tmp_path
        )
    assert not (tmp_path / "rt").exists()


def test_path_interpreters_are_found_and_pyenv_shims_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_lookup: Path
) -> None:
    real = PYENV_VERSIONS / "3.12.1" / "bin" / "python3.12"
    if not real.is_file():
        pytest.skip("needs pyenv's CPython 3.12.1")
    root = _fake_pyenv(tmp_path, {})
    shim = root / "shims" / "python3.12"
    shim.write_text("#!/bin/sh\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{root / 'shims'}{os.pathsep}{isolated_lookup}")
    with pytest.raises(RuntimeFetchError, match=r"no local CPython 3\.12 found"):
        find_local_interpreter("3.12")
    (isolated_lookup / "python3.12").symlink_to(real)
    assert find_local_interpreter("3.12") == isolated_lookup / "python3.12"


def test_local_runtime_shape_and_provenance(local_runtime: tuple[Path, ProvidedRuntime]) -> None:
    root, provided = local_runtime
    check_runtime_shape(root, "3.12")
    assert provided.source["kind"] == "local"
    assert re.fullmatch(r"3\.12\.\d+", provided.python_version)
    origin = Path(provided.source["origin"])
    assert (origin / "lib" / "python3.12" / "os.py").is_file()
    assert (root / "include" / "python3.12" / "Python.h").is_file()
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)


def _elf_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == ELF_MAGIC:
                    found.append(path)
    return found


def test_local_runtime_does_not_name_its_origin(
    local_runtime: tuple[Path, ProvidedRuntime],
) -> None:
    root, provided = local_runtime
    origin = provided.source["origin"].encode()
    elves = set(_elf_files(root))
    assert len(elves) > 10  # the interpreter, libpython and the stdlib extension modules
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in elves:
            data = path.read_bytes()
            assert origin not in data, f"{path} names {origin.decode()}"
            if data.startswith(b"#!"):
                first = data.split(b"\n", 1)[0]
                assert not re.match(rb"#!\s*/\S*python", first), f"{path}: {first!r}"
    sysconfigdata = next((root / "lib" / "python3.12").glob("_sysconfigdata_*.py"))
    assert "'/install/lib/python3.12'" in sysconfigdata.read_text()
    patchelf = patchelf_binary()
    for elf in elves:
        runpath = subprocess.run(
            [patchelf, "--print-rpath", str(elf)], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert all(e.startswith("$ORIGIN") for e in runpath.split(":") if e), (elf, runpath)
    interpreter_runpath = subprocess.run(
        [patchelf, "--print-rpath", str(root / "bin" / "python3.12")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert interpreter_runpath == "$ORIGIN/../lib"


def test_local_runtime_has_no_debug_info(local_runtime: tuple[Path, ProvidedRuntime]) -> None:
    readelf = shutil.which("readelf")
    if not shutil.which("strip") or not readelf:
        pytest.skip("needs binutils (strip, readelf)")
    root, provided = local_runtime
    lib = root / "lib" / "libpython3.12.so.1.0"
    original = Path(provided.source["origin"]) / "lib" / lib.name
    if not lib.exists():
        pytest.skip("the local CPython is not built shared")

    def sections(path: Path) -> str:
        return subprocess.run(
            [readelf, "-S", "-W", str(path)], capture_output=True, text=True
        ).stdout

    assert ".debug_info" in sections(original)  # so the check below means something
    assert ".debug_info" not in sections(lib)
    assert lib.stat().st_size < original.stat().st_size / 2


_INSPECT = """
import json, sys, ssl, sqlite3, ctypes, decimal, hashlib, zlib, lzma, bz2, json, uuid, venv
import _ctypes, _decimal, _sqlite3, _ssl, math, select, socket
mods = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
print(json.dumps({"prefix": [sys.prefix, sys.base_prefix, sys.exec_prefix], "path": sys.path,
                  "modules": mods, "executable": sys.executable}))
"""


def test_local_runtime_runs_after_moving_with_nothing_from_its_origin(
    local_runtime: tuple[Path, ProvidedRuntime], tmp_path: Path
) -> None:
    origin = local_runtime[1].source["origin"]
    built = tmp_path / "first" / "cpython-3.12"
    shutil.copytree(local_runtime[0], built, symlinks=True)
    moved = tmp_path / "elsewhere" / "deeper" / "runtime"
    moved.parent.mkdir(parents=True)
    built.rename(moved)

    result = run_python(moved / "bin" / "python3", _INSPECT, cwd=tmp_path, env={"LD_DEBUG": "libs"})
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout)
    loads = [line for line in result.stderr.splitlines() if "calling init:" in line]
    assert any(f"{moved}/bin/../lib/libpython3.12" in line for line in loads), loads
    assert origin not in result.stderr  # the dynamic loader never even looked there
    inside = str(moved) + os.sep
    assert all(p == str(moved) for p in facts["prefix"])
    assert facts["executable"].startswith(inside)
    assert all(p.startswith(inside) for p in facts["path"]), facts["path"]
    assert all(m.startswith(inside) for m in facts["modules"]), facts["modules"]
    assert origin not in result.stdout


def test_local_runtime_is_atomic_and_replaces_the_old_one(
    tmp_path: Path, local_runtime: tuple[Path, ProvidedRuntime]
) -> None:
    target = tmp_path / "rt"
    target.mkdir()
    (target / "stale").write_text("old")
    started = time.monotonic()
    provided = provide_runtime(
        "cpython@3.12", RuntimeSource("local"), target, download_dir=tmp_path / "dl"
    )
    elapsed = time.monotonic() - started
    assert provided == local_runtime[1]
    assert not (target / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt"]  # no partials, no downloads
    print(f"local runtime in {elapsed:.2f} s")


@pytest.mark.parametrize("version", ["3.8", "3.9", "3.10", "3.11", "3.13"])
def test_local_runtimes_of_other_versions_relocate(
    tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        find_local_interpreter(version)
    except RuntimeFetchError:
        pytest.skip(f"no local CPython {version}")
    built = tmp_path / "built"
    provided = provide_runtime(
        f"cpython@{version}", RuntimeSource("local"), built, download_dir=tmp_path / "dl"
    )
    moved = tmp_path / "moved"
    built.rename(moved)
    check_runtime_shape(moved, version)
    code = "import sys, ssl, sqlite3, ctypes; print(sys.version.split()[0]); print(sys.prefix)"
    result = run_python(moved / "bin" / "python", code, cwd=tmp_path, env={"LD_DEBUG": "libs"})
    assert result.stdout.split() == [provided.python_version, str(moved)], result.stderr[-2000:]
    assert provided.source["origin"] not in result.stderr


def test_a_missing_patch_release_needs_the_any_patch_opt_in(tmp_path: Path) -> None:
    """cpython@X.Y.Z with only another X.Y patch installed: refused, unless asked for."""
    installed = sorted(p.name for p in PYENV_VERSIONS.glob("3.12.*"))
    if not installed:
        pytest.skip("no pyenv CPython 3.12")
    pinned = "3.12.0" if "3.12.0" not in installed else "3.12.99"
    target = tmp_path / "cpython-3.12"
    with pytest.raises(RuntimeFetchError) as caught:
        provide_runtime(
            f"cpython@{pinned}", RuntimeSource("local"), target, download_dir=tmp_path / "dl"
        )
    assert f"no local CPython {pinned} found" in caught.value.message
    assert caught.value.hint is not None and "--runtime-any-patch" in caught.value.hint
    assert not target.exists()
    provided = provide_runtime(
        f"cpython@{pinned}",
        RuntimeSource("local"),
        target,
        download_dir=tmp_path / "dl",
        any_patch=True,
    )
    newest = max(installed, key=lambda v: tuple(map(int, v.split("."))))
    assert (provided.python_version, provided.requested) == (newest, pinned)
    assert provided.source["requested"] == pinned
    ran = subprocess.run(
        [
            str(target / "bin" / "python3.12"),
            "-c",
            "import platform; print(platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == newest
    # The exact release, when installed, is used as it is: nothing stands in.
    exact = provide_runtime(
        f"cpython@{newest}",
        RuntimeSource("local"),
        tmp_path / "exact",
        download_dir=tmp_path / "dl",
        any_patch=True,
    )
    assert exact.requested is None and "requested" not in exact.source
