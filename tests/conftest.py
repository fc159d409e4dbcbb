"""Shared fixtures: small real things (spec files, wheels, runtimes), never mocks."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tests never share provided runtimes through the user's store (~/.cache/stacks/runtimes):
# some damage runtimes on purpose, and hard links would carry that into other projects.
# The store's own tests (tests/test_runtime_store.py) point it at a folder of their own.
os.environ["STACKS_RUNTIME_STORE"] = "off"


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file (dedented) into a fresh folder and return its path."""

    def _write(text: str, name: str = "stack.toml", folder: Path | None = None) -> Path:
        target = (folder or tmp_path) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")
        return target

    return _write


from typing import TYPE_CHECKING  # noqa: E402  (appended section)

# --- runtimes: a misbehaving HTTP server and a real local runtime -----------------------

LOCAL_RUNTIME_PYTHON = "3.12"  # the local CPython the runtime fixtures are made from

if TYPE_CHECKING:
    from collections.abc import Iterator

    from http_server import FaultyServer

    from stacks.runtime.sources import ProvidedRuntime


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    """A real HTTP server on 127.0.0.1 whose answers can be made to misbehave (see http_server.py)."""
    from http_server import FaultyServer

    with FaultyServer() as server:
        yield server


@pytest.fixture(scope="session")
def local_runtime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ProvidedRuntime]:
    """A relocatable runtime made from the local CPython 3.12, shared by the session: read only."""
    from stacks.errors import RuntimeFetchError
    from stacks.runtime.sources import find_local_interpreter, provide_runtime
    from stacks.spec import RuntimeSource

    try:
        find_local_interpreter(LOCAL_RUNTIME_PYTHON)
    except RuntimeFetchError as exc:
        pytest.skip(f"no local CPython {LOCAL_RUNTIME_PYTHON}: {exc.message}")
    target = tmp_path_factory.mktemp("local-runtime") / f"cpython-{LOCAL_RUNTIME_PYTHON}"
    provided = provide_runtime(
        f"cpython@{LOCAL_RUNTIME_PYTHON}",
        RuntimeSource("local"),
        target,
        download_dir=tmp_path_factory.mktemp("downloads"),
    )
    return target, provided
