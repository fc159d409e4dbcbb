"""End to end: lock and build real stacks (real uv, real PyPI, a real local CPython) via the CLI."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from projects import EXCLUDE_NEWER, SMALL_STACK
from stackrun import layer_of, stacks
from wheels import build_wheel

pytestmark = pytest.mark.slow

THREE_LAYERS = SMALL_STACK

APP = """
import json, sys
import attrs, idna, six
print(json.dumps({
    "six": six.__file__, "attrs": attrs.__file__, "idna": idna.__file__,
    "path": sys.path, "executable": sys.executable, "argv": sys.argv[1:],
}))
"""


def make_project(folder: Path, spec: str = THREE_LAYERS, app: str = APP) -> Path:
    """Write a spec and its launch module into `folder`; return the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(textwrap.dedent(app), encoding="utf-8")
    path = folder / "stack.toml"
    path.write_text(textwrap.dedent(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer stack, locked and built once for the module."""
    spec = make_project(tmp_path_factory.mktemp("three"))
    stacks("build", spec, "--json")
    return spec


def test_three_layers_build_and_the_app_imports_from_each_layer(built: Path) -> None:
    out = stacks("run", built, "app", "--", "--flag")
    report = json.loads(out.stdout)
    build_root = built.parent / "cache" / "build"
    assert layer_of(report["six"], build_root) == "cpython-3.12"
    assert layer_of(report["attrs"], build_root) == "framework-fw"
    assert layer_of(report["idna"], build_root) == "app-app"
    assert report["argv"] == ["--flag"]
    assert Path(report["executable"]) == build_root / "app-app" / "bin" / "python"
    # Each package is installed once, in its own layer: the app does not carry attrs or six.
    app_site = build_root / "app-app" / "lib" / "python3.12" / "site-packages"
    assert not list(app_site.glob("attrs*")) and not list(app_site.glob("six*"))
    assert list(
        (build_root / "framework-fw" / "lib" / "python3.12" / "site-packages").glob(
            "attrs-*.dist-info"
        )
    )


def test_sys_path_order_is_layer_then_frameworks_then_runtime(built: Path) -> None:
    out = stacks("run", built, "app")
    build_root = (built.parent / "cache" / "build").resolve()
    layers = []
    for entry in json.loads(out.stdout)["path"]:
        path = Path(entry).resolve()
        if path.is_relative_to(build_root) and path.name == "site-packages":
            layers.append(path.relative_to(build_root).parts[0])
    assert layers == ["app-app", "framework-fw", "cpython-3.12"]


def test_second_build_runs_nothing(built: Path) -> None:
    out = stacks("build", built, "--json")
    assert out.ran() == []
    assert set(out.statuses().values()) == {"up-to-date"}


def test_tasks_run_one_at_a_time_without_doit(built: Path) -> None:
    """A chain of tasks (or -n 1) runs in this process in order; doit is never imported."""
    out = stacks(
        "build",
        built,
        "--clean",
        "--include",
        "app-app",
        "--json",
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert out.ran() == ["build:app-app"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "stacks.pipeline.sequential" in imported
    assert not {name for name in imported if name.split(".")[0] == "doit"}


def test_a_killed_runs_temporary_lock_files_are_removed_by_the_next_run(built: Path) -> None:
    """A SIGKILL while lock metadata was being written leaves a `.NAME.XXXX.tmp` beside it."""
    folders = sorted((built.parent / "requirements").iterdir())
    assert folders
    stale = [
        folder / f".{next(folder.glob('*.meta.json')).name}.6d49e893.tmp" for folder in folders
    ]
    for path in stale:
        path.write_text("{}", encoding="utf-8")
    keep = folders[0] / ".keep.tmp.txt"  # not a temporary file of stacks' naming
    keep.write_text("", encoding="utf-8")
    out = stacks("build", built, "--json")
    assert out.ran() == []
    assert [path for path in stale if path.exists()] == [] and keep.exists()
    keep.unlink()


def test_dry_run_reports_without_running(built: Path) -> None:
    app = built.parent / "app.py"
    original = app.read_text(encoding="utf-8")
    try:
        app.write_text(original + "\n# changed\n", encoding="utf-8")
        out = stacks("build", built, "--dry-run", "--json")
        plan = {item["task"]: item for item in out.data["plan"]}
        assert plan["build:app-app"]["status"] == "run"
        assert "modules changed" in plan["build:app-app"]["reasons"]
        assert plan["build:framework-fw"]["status"] == "up-to-date"
        # Nothing was rebuilt by the dry run.
        assert stacks("build", built, "--dry-run", "--json").data["plan"] == out.data["plan"]
    finally:
        app.write_text(original, encoding="utf-8")
    assert stacks("build", built, "--json").ran() == []


def test_incremental_rules(tmp_path: Path) -> None:
    # Step 5 edits a file hard-linked from uv's cache on purpose: keep that to a private cache.
    env = {"UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    spec = make_project(tmp_path / "inc")
    first = stacks("build", spec, "--json", env=env)
    assert first.ran("build") == ["build:app-app", "build:cpython-3.12", "build:framework-fw"]

    # 1. One application's requirements change: only that app is relocked and rebuilt.
    spec.write_text(
        spec.read_text().replace('requirements = ["idna"]', 'requirements = ["idna", "iniconfig"]')
    )
    out = stacks("build", spec, "--json", env=env)
    assert out.ran() == ["build:app-app", "lock:app-app"]

    # 2. A framework change that leaves the app's lock identical rebuilds the framework only.
    spec.write_text(
        spec.read_text().replace(
            'requirements = ["attrs"]', 'requirements = ["attrs", "packaging"]'
        )
    )
    out = stacks("build", spec, "--json", env=env)
    assert out.ran("build") == ["build:framework-fw"]
    assert "lock:framework-fw" in out.ran("lock")

    # 3. A launch module change rebuilds that app only (an unversioned lock is unaffected).
    (spec.parent / "app.py").write_text(APP + "\n# edited\n", encoding="utf-8")
    out = stacks("build", spec, "--json", env=env)
    assert out.ran() == ["build:app-app"]

    # 4. A deleted build folder is rebuilt; nothing above it is.
    shutil.rmtree(spec.parent / "cache" / "build" / "framework-fw")
    out = stacks("build", spec, "--json", env=env)
    assert out.ran() == ["build:framework-fw"]

    # 5. A file edited inside a build environment is noticed (stat check) and repaired.
    victim = next(
        (
            spec.parent
            / "cache"
            / "build"
            / "app-app"
            / "lib"
            / "python3.12"
            / "site-packages"
            / "idna"
        ).glob("core.py")
    )
    victim.write_text("broken = True\n", encoding="utf-8")
    out = stacks("build", spec, "--json", env=env)
    assert out.ran() == ["build:app-app"]
    assert "broken" not in victim.read_text(encoding="utf-8")

    # 6. --clean forces the selected builds.
    out = stacks("build", spec, "--json", "--clean", "--include", "app-*", env=env)
    assert out.ran() == ["build:app-app"]

    # 7. Nothing changed: nothing runs.
    assert stacks("build", spec, "--json", env=env).ran() == []


DIAMOND = f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "rt"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "a"
runtime = "rt"
requirements = []

[[frameworks]]
name = "b"
frameworks = ["a"]
requirements = []

[[frameworks]]
name = "c"
frameworks = ["a"]
requirements = []

[[frameworks]]
name = "d"
frameworks = ["b", "c"]
requirements = []

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["d"]
requirements = []
"""

PATH_APP = """
import json, sys
print(json.dumps(sys.path))
"""


def test_diamond_sys_path_follows_c3(tmp_path: Path) -> None:
    spec = make_project(tmp_path / "diamond", DIAMOND, PATH_APP)
    stacks("build", spec)
    out = stacks("run", spec, "app")
    build_root = (spec.parent / "cache" / "build").resolve()
    order = [
        Path(p).resolve().relative_to(build_root).parts[0]
        for p in json.loads(out.stdout)
        if Path(p).resolve().is_relative_to(build_root) and p.endswith("site-packages")
    ]
    # Python's own MRO of the same class graph gives the expected order.
    a = type("a", (), {})
    b = type("b", (a,), {})
    c = type("c", (a,), {})
    d = type("d", (b, c), {})
    mro = ["framework-" + k.__name__ for k in d.__mro__[:-1]]
    assert order == ["app-app", *mro, "rt"]


LOCAL = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "rt"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "fw"
runtime = "rt"
requirements = ["tinypkg"]
"""


def test_failed_build_keeps_the_previous_build(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinypkg", "1.0")
    spec = make_project(tmp_path / "fail", LOCAL, PATH_APP)
    stacks("build", spec, "--no-index", "--local-wheels", wheels)
    built_file = (
        spec.parent
        / "cache"
        / "build"
        / "framework-fw"
        / "lib"
        / "python3.12"
        / "site-packages"
        / "tinypkg.py"
    )
    assert built_file.read_text(encoding="utf-8") == 'VERSION = "1.0"\n'
    # The wheel changes after locking (same name, other bytes): installing must fail its hash check.
    wheel = next(wheels.glob("*.whl"))
    wheel.unlink()
    build_wheel(wheels, "tinypkg", "1.0", files={"tinypkg.py": "VERSION = 'tampered'\n"})
    out = stacks(
        "build", spec, "--json", "--clean", "--no-index", "--local-wheels", wheels, check=False
    )
    assert out.code == 1
    assert out.statuses()["build:framework-fw"] == "failed"
    assert "Traceback" not in out.stderr
    # The previous build is untouched and no partial folder is left behind.
    assert built_file.read_text(encoding="utf-8") == 'VERSION = "1.0"\n'
    leftovers = [
        p.name for p in (spec.parent / "cache" / "build").iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_run_refuses_unbuilt_app(tmp_path: Path) -> None:
    spec = make_project(tmp_path / "unbuilt")
    out = stacks("run", spec, "app", check=False)
    assert out.code == 1
    assert "not built" in out.stderr and "Traceback" not in out.stderr
