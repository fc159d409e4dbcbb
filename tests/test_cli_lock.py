"""`stacks lock` end to end through the CLI (and doit): tasks, up-to-date checks, options, errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from projects import (
    SMALL_STACK,
    copy_project,
    doit,
    no_traceback,
    private_uv_cache,
    snapshot,
    write_project,
)
from stackrun import Outcome, stacks
from wheels import build_wheel

SPEC = SMALL_STACK
APP = "import attrs, idna, six\nprint(idna.__name__)\n"
LAYERS = ("cpython-3.12", "framework-fw", "app-app")
LOCK_TASKS = sorted(f"lock:{layer}" for layer in LAYERS)

LOCAL_SPEC = """
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

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["fw"]
requirements = ["otherpkg"]
"""
LOCAL_APP = "import otherpkg, tinypkg\nprint(tinypkg.VERSION)\n"


def replace_in(spec: Path, old: str, new: str) -> None:
    """Edit the spec file (the old text must be there)."""
    text = spec.read_text(encoding="utf-8")
    assert old in text
    spec.write_text(text.replace(old, new, 1), encoding="utf-8")


def lock_files(spec: Path) -> dict[str, bytes | str]:
    """Every lock file of a project."""
    return snapshot(spec.parent / "requirements")


def pylock(spec: Path, env: str) -> str:
    """A layer's committed pylock text."""
    lock_name = env.replace(".", "_")
    return (spec.parent / "requirements" / env / f"pylock.{lock_name}.toml").read_text("utf-8")


def lock_meta(spec: Path, env: str) -> dict:
    """A layer's committed lock metadata."""
    lock_name = env.replace(".", "_")
    path = spec.parent / "requirements" / env / f"pylock.{lock_name}.meta.json"
    return json.loads(path.read_text("utf-8"))


def task_lines(text: str) -> set[str]:
    """The `step:layer` task names at the start of the lines of a task listing."""
    return {m.group(1) for m in re.finditer(r"^(?:\S+\s+)??(\w+:[\w.@-]+)\s", text, re.M)}


uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Outcome]:
    """A three-layer project locked once with `stacks lock` (tests only read it)."""
    spec = write_project(tmp_path_factory.mktemp("locked"), SPEC, {"app.py": APP})
    return spec, stacks("lock", spec, "--json")


# ---------------------------------------------------------------- the happy path


@pytest.mark.slow
def test_lock_locks_every_layer(locked: tuple[Path, Outcome]) -> None:
    spec, first = locked
    assert first.ran() == [
        "lock:app-app",
        "lock:cpython-3.12",
        "lock:framework-fw",
        "runtime:cpython-3.12",
    ]
    no_traceback(first)
    for env in LAYERS:
        meta = lock_meta(spec, env)
        assert meta["lock_version"] == 1
        assert meta["locked_at"] == "2025-06-01T00:00:00+00:00"
        content = pylock(spec, env).encode("utf-8")
        assert meta["requirements_hash"] == "sha256:" + hashlib.sha256(content).hexdigest()
        assert str(spec.parent) not in pylock(spec, env)  # no absolute paths in a lock
    assert 'name = "attrs"' in pylock(spec, "framework-fw")
    app = pylock(spec, "app-app")
    assert 'name = "idna"' in app and 'name = "attrs"' not in app


@pytest.mark.slow
def test_second_lock_runs_nothing(locked: tuple[Path, Outcome]) -> None:
    spec, _ = locked
    before = lock_files(spec)
    again = stacks("lock", spec, "--json")
    assert again.ran() == []
    assert set(again.statuses()) == {*LOCK_TASKS, "runtime:cpython-3.12"}
    assert set(again.statuses().values()) == {"up-to-date"}
    assert lock_files(spec) == before


@pytest.mark.slow
def test_stacks_list_and_doit_list_show_the_lock_tasks(locked: tuple[Path, Outcome]) -> None:
    spec, _ = locked
    ours = stacks("list", spec)
    theirs = doit("list", "--all", f"spec={spec}")
    for listing in (ours.stdout, theirs.stdout):
        assert set(LOCK_TASKS) <= task_lines(listing), listing
    # Both list the same tasks (stacks list knows the publish and export tasks too).
    assert task_lines(ours.stdout) == task_lines(theirs.stdout)
    status = stacks("list", spec, "--status")
    assert set(LOCK_TASKS) <= task_lines(status.stdout)
    for task in LOCK_TASKS:
        assert re.search(rf"^U\s+{re.escape(task)}\s", status.stdout, re.M), status.stdout
    # --include lists the matching layers and what they need.
    some = task_lines(stacks("list", spec, "--include", "framework-*").stdout)
    assert {"lock:cpython-3.12", "lock:framework-fw", "build:framework-fw"} <= some
    assert not [task for task in some if task.endswith("app-app")]
    assert (
        doit("list", "--all", f"spec={spec}", *sorted(some)).stdout
        == stacks("list", spec, "--include", "framework-*").stdout
    )
    assert stacks("list", spec, "--include", "nothing", check=False).code == 2


@pytest.mark.slow
def test_doit_lock_runs_the_same_tasks_and_writes_the_same_files(
    locked: tuple[Path, Outcome], tmp_path: Path
) -> None:
    spec, _ = locked
    other = copy_project(spec, tmp_path / "by doit", with_locks=False)
    first = doit("lock", f"spec={other}")
    ran = {line.split()[-1] for line in first.stdout.splitlines() if line.startswith(".")}
    assert ran == {*LOCK_TASKS, "runtime:cpython-3.12"}
    assert lock_files(other) == lock_files(spec)
    # doit and stacks agree that nothing is left to do.
    again = doit("lock", f"spec={other}")
    assert not [line for line in again.stdout.splitlines() if line.startswith(".")], again.stdout
    assert stacks("lock", other, "--json").ran() == []
    # `doit clean TASK` removes what the task produced, as `stacks clean` does (never locks).
    stamp = other.parent / "cache" / "stamps" / "runtime" / "cpython-3.12.json"
    assert stamp.is_file() and (other.parent / "cache" / "runtimes" / "cpython-3.12").is_dir()
    doit("clean", f"spec={other}", "runtime:cpython-3.12", "lock:app-app")
    assert (
        not stamp.exists() and not (other.parent / "cache" / "runtimes" / "cpython-3.12").exists()
    )
    assert lock_files(other) == lock_files(spec)


@pytest.mark.slow
def test_info_says_why_a_lock_would_run(locked: tuple[Path, Outcome], tmp_path: Path) -> None:
    spec = copy_project(locked[0], tmp_path / "info")
    # Committed locks stay valid in another folder: only the runtime is provided.
    assert stacks("lock", spec, "--json").ran() == ["runtime:cpython-3.12"]
    current = stacks("info", spec, "lock:framework-fw")
    assert current.stdout.startswith("lock:framework-fw: lock framework-fw for linux_x86_64")
    assert "\nneeds: runtime:cpython-3.12, lock:cpython-3.12\n" in current.stdout
    assert "status: up to date" in current.stdout
    runtime = stacks("info", spec, "runtime:cpython-3.12").stdout
    assert f"wrote: {spec.parent / 'cache' / 'runtimes' / 'cpython-3.12'}\n" in runtime
    replace_in(spec, '["attrs"]', '["attrs", "iniconfig"]')

    own = stacks("info", spec, "lock:framework-fw")
    assert own.code == 0
    assert "status: will run" in own.stdout
    assert "because: requirements changed (added iniconfig)" in own.stdout
    assert "RunContext(" not in own.stdout and "<function" not in own.stdout

    above = stacks("info", spec, "lock:app-app", "--json").data
    assert above["status"] == "maybe"
    assert above["reasons"] == ["after lock:framework-fw, if that changes its inputs"]
    assert above["all_dependencies"] == [
        "runtime:cpython-3.12",
        "lock:cpython-3.12",
        "lock:framework-fw",
    ]

    plan = {p["task"]: p for p in stacks("lock", spec, "--dry-run", "--json").data["plan"]}
    assert plan["lock:framework-fw"]["status"] == "run"
    assert plan["lock:cpython-3.12"]["status"] == "up-to-date"
    after = stacks("lock", spec, "--json")
    assert after.ran() == ["lock:app-app", "lock:framework-fw"]
    assert lock_meta(spec, "framework-fw")["lock_version"] == 2
    assert "status: up to date" in stacks("info", spec, "lock:framework-fw").stdout


@pytest.mark.slow
def test_include_locks_matching_layers_and_what_they_need(
    locked: tuple[Path, Outcome], tmp_path: Path
) -> None:
    spec = copy_project(locked[0], tmp_path / "include", with_locks=False)
    first = stacks("lock", spec, "--include", "framework-*", "--json")
    assert first.ran() == ["lock:cpython-3.12", "lock:framework-fw", "runtime:cpython-3.12"]
    assert not (spec.parent / "requirements" / "app-app").exists()
    second = stacks("lock", spec, "--include", "app-*", "--json")
    assert second.ran() == ["lock:app-app"]
    assert lock_files(spec) == lock_files(locked[0])


# ---------------------------------------------------------------- local wheels and indexes


@pytest.fixture
def wheel_project(tmp_path: Path) -> Path:
    """A project whose packages come only from a folder of local wheels."""
    build_wheel(tmp_path / "proj" / "wheels", "tinypkg", "1.0")
    build_wheel(tmp_path / "proj" / "wheels", "otherpkg", "1.0", requires=["tinypkg"])
    return write_project(tmp_path / "proj", LOCAL_SPEC, {"app.py": LOCAL_APP})


@pytest.mark.slow
def test_local_wheels_lock_with_relative_paths_and_reset_lock_re_resolves(
    wheel_project: Path,
) -> None:
    spec = wheel_project
    options = ("--no-index", "--local-wheels", spec.parent / "wheels")
    stacks("lock", spec, *options)
    fw = pylock(spec, "framework-fw")
    assert 'path = "../../wheels/tinypkg-1.0-py3-none-any.whl"' in fw
    assert str(spec.parent) not in fw and "file:" not in fw
    assert lock_meta(spec, "app-app")["inputs"]["other"]["local_wheels"] == ["wheels"]
    # doit through the root dodo.py (which takes no index options) agrees: nothing to lock.
    by_doit = doit("lock", f"spec={spec}")
    assert not [line for line in by_doit.stdout.splitlines() if line.startswith(".")], (
        by_doit.stdout
    )
    assert 'shared-from = "framework-fw"' in pylock(spec, "app-app")

    # The lock records how it was made. Without any index option a run keeps those settings
    # (nothing to redo); other index options make it a different lock.
    plan = stacks("lock", spec, "--dry-run", "--json").data["plan"]
    assert {p["status"] for p in plan if p["task"].startswith("lock:")} == {"up-to-date"}
    plan = stacks("lock", spec, "--index", "--dry-run", "--json").data["plan"]
    reasons = {p["task"]: p["reasons"] for p in plan}
    assert "no-index changed: on -> off" in reasons["lock:framework-fw"]
    assert any("local wheel folders changed" in r for r in reasons["lock:framework-fw"])

    # A newer wheel appears: an up-to-date lock keeps its pins ...
    build_wheel(spec.parent / "wheels", "tinypkg", "1.1")
    assert stacks("lock", spec, *options, "--json").ran() == []
    assert 'version = "1.0"' in pylock(spec, "framework-fw")
    # ... until --reset-lock re-resolves the matching layer (and relocks what sits on it).
    reset = stacks("lock", spec, *options, "--reset-lock", "framework-*", "--json")
    assert reset.ran() == ["lock:app-app", "lock:framework-fw"]
    assert 'path = "../../wheels/tinypkg-1.1-py3-none-any.whl"' in pylock(spec, "framework-fw")
    assert lock_meta(spec, "framework-fw")["lock_version"] == 2
    assert lock_meta(spec, "rt")["lock_version"] == 1

    # The relative paths install: build and run the app, with no index option repeated.
    assert stacks("build", spec, "--json").ran("lock") == []
    assert stacks("run", spec, "app").stdout.strip() == "1.1"

    # A requirement changes: the plain relock offline from the recorded wheel folder.
    spec.write_text(
        spec.read_text(encoding="utf-8").replace('["otherpkg"]', '["otherpkg", "tinypkg"]'),
        encoding="utf-8",
    )
    relock = stacks("build", spec, "--json")
    assert relock.ran("lock") == ["lock:app-app"]
    assert lock_meta(spec, "app-app")["inputs"]["other"]["no_index"] is True
    assert lock_meta(spec, "app-app")["inputs"]["other"]["local_wheels"] == ["wheels"]


@pytest.mark.slow
def test_a_package_missing_from_the_wheel_folder(wheel_project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no wheels here"
    empty.mkdir()
    out = stacks("lock", wheel_project, "--no-index", "--local-wheels", empty, check=False)
    assert_lock_failure(out, "framework-fw", "tinypkg was not found")
    assert "hint: check the package names, and the index or wheel folders" in out.stderr
    assert "-- not run because lock:framework-fw failed: 1 task: lock:app-app" in out.stderr
    assert not (wheel_project.parent / "requirements" / "framework-fw").exists()


def write_simple_index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 simple index of `wheels` under `root`; return its file:// URL."""
    files = root / "files"
    files.mkdir(parents=True)
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        shutil.copy2(wheel, files / wheel.name)
        projects.setdefault(wheel.name.split("-")[0].replace("_", "-"), []).append(wheel)
    for project, members in projects.items():
        links = "".join(
            f'<a href="../../files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
            f"{w.name}</a>\n"
            for w in members
        )
        (root / "simple" / project).mkdir(parents=True)
        (root / "simple" / project / "index.html").write_text(
            f"<html><body>\n{links}</body></html>\n"
        )
    listing = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects)
    (root / "simple" / "index.html").write_text(f"<html><body>\n{listing}</body></html>\n")
    return (root / "simple").as_uri()


@pytest.mark.slow
def test_index_url_with_a_local_file_index(tmp_path: Path) -> None:
    made = tmp_path / "made"
    wheels = [
        build_wheel(made, "tinypkg", "2.0"),
        build_wheel(made, "otherpkg", "1.0", requires=["tinypkg"]),
    ]
    spec = write_project(tmp_path / "proj", LOCAL_SPEC, {"app.py": LOCAL_APP})
    url = write_simple_index(spec.parent / "index", wheels)
    first = stacks("lock", spec, "--index-url", url, "--json")
    assert first.ran("lock") == ["lock:app-app", "lock:framework-fw", "lock:rt"]
    fw = pylock(spec, "framework-fw")
    assert 'path = "../../index/files/tinypkg-2.0-py3-none-any.whl"' in fw
    assert "sha256 = " in fw
    # A file index inside the project is recorded like a wheel folder: relative to the spec.
    assert lock_meta(spec, "framework-fw")["inputs"]["other"]["index_url"] == "file:index/simple"
    stacks("build", spec, "--index-url", url)
    assert stacks("run", spec, "app").stdout.strip() == "2.0"
    # So the project cloned elsewhere, with its own index, keeps valid locks.
    clone = copy_project(spec, tmp_path / "clone 🦎")
    moved_url = (clone.parent / "index" / "simple").as_uri()
    relock = stacks("lock", clone, "--index-url", moved_url, "--json")
    assert relock.ran() == ["runtime:rt"]
    # And without the option, the recorded (spec-relative) file index is the clone's own.
    assert stacks("lock", clone, "--json").ran() == []
    spec_text = clone.read_text(encoding="utf-8")
    clone.write_text(spec_text.replace('["otherpkg"]', '["otherpkg", "tinypkg"]'), encoding="utf-8")
    assert stacks("lock", clone, "--json").ran() == ["lock:app-app"]
    assert lock_meta(clone, "app-app")["inputs"]["other"]["index_url"] == "file:index/simple"


# ---------------------------------------------------------------- failures


def assert_lock_failure(out: Outcome, layer: str, *explanation: str) -> None:
    """A failed lock run: exit 1, the layer named with uv's explanation, no traceback."""
    assert out.code == 1, out.stderr
    no_traceback(out)
    assert f"FAILED lock:{layer}" in out.stderr
    assert f"cannot lock layer '{layer}'" in out.stderr
    for text in explanation:
        assert text in out.stderr, out.stderr


@pytest.mark.slow
def test_conflict_inside_a_layer_fails_and_keeps_the_previous_lock(
    locked: tuple[Path, Outcome], tmp_path: Path
) -> None:
    spec = copy_project(locked[0], tmp_path / "conflict")
    before = lock_files(spec)
    replace_in(spec, '["attrs"]', '["attrs", "iniconfig<1", "iniconfig>=2"]')
    out = stacks("lock", spec, check=False)
    assert_lock_failure(out, "framework-fw", "No solution found", "unsatisfiable")
    assert "-- not run because lock:framework-fw failed: 1 task: lock:app-app" in out.stderr
    assert "1 failed, 1 not run" in out.stderr
    assert lock_files(spec) == before  # nothing written, the old lock untouched

    data = stacks("lock", spec, "--json", check=False)
    assert data.code == 1 and data.data["exit_code"] == 1
    assert data.statuses() == {
        "runtime:cpython-3.12": "up-to-date",
        "lock:cpython-3.12": "up-to-date",
        "lock:framework-fw": "failed",
        "lock:app-app": "not-run",
    }
    errors = {t["task"]: t["error"] for t in data.data["tasks"]}
    assert errors["lock:app-app"] == "not run because lock:framework-fw failed"
    assert lock_files(spec) == before

    # A layer that was never locked gets no files at all.
    fresh = copy_project(spec, tmp_path / "fresh", with_locks=False)
    assert stacks("lock", fresh, check=False).code == 1
    assert sorted(p.name for p in (fresh.parent / "requirements").iterdir()) == ["cpython-3.12"]


@pytest.mark.slow
def test_conflict_with_a_lower_layer_pin(locked: tuple[Path, Outcome], tmp_path: Path) -> None:
    spec = copy_project(locked[0], tmp_path / "lower")
    before = lock_files(spec)
    replace_in(spec, '["attrs"]', '["attrs", "six<1.10"]')
    out = stacks("lock", spec, check=False)
    six = re.search(r'name = "six"\nversion = "([^"]+)"', pylock(spec, "cpython-3.12"))
    assert six is not None
    assert_lock_failure(out, "framework-fw", "six<1.10", f"lower layers pin six=={six.group(1)}")
    assert "-- not run because lock:framework-fw failed: 1 task: lock:app-app" in out.stderr
    assert lock_files(spec) == before
    # With the build step, everything above the failed lock is reported as not run.
    built = stacks("build", spec, "--json", check=False)
    assert built.code == 1
    assert built.statuses()["build:framework-fw"] == "not-run"
    assert built.statuses()["build:app-app"] == "not-run"
    assert built.statuses()["build:cpython-3.12"] == "ran"  # independent of the failure
    no_traceback(built)


@pytest.mark.slow
def test_an_app_conflicting_with_its_framework(
    locked: tuple[Path, Outcome], tmp_path: Path
) -> None:
    spec = copy_project(locked[0], tmp_path / "app")
    before = lock_files(spec)
    replace_in(spec, '["idna"]', '["idna", "attrs<20"]')
    out = stacks("lock", spec, check=False)
    assert_lock_failure(out, "app-app", "attrs<20", "lower layers pin attrs==")
    assert lock_files(spec) == before


# ---------------------------------------------------------------- usage errors (no locking)


@pytest.fixture
def spec_only(tmp_path: Path) -> Path:
    """The three-layer spec, never locked."""
    return write_project(tmp_path / "spec only", SPEC, {"app.py": APP})


@pytest.mark.parametrize(
    "args",
    [
        ("--include", "nothing-*"),
        ("--include", "app-*", "--include", "typo"),
        ("--reset-lock", "nothing-*"),
        ("--local-wheels", "no such folder"),
        ("--local-wheels", "stack.toml"),
    ],
)
def test_usage_errors_exit_2_without_running(spec_only: Path, args: tuple[str, ...]) -> None:
    resolved = [
        str(spec_only.parent / a) if a in ("no such folder", "stack.toml") else a for a in args
    ]
    out = stacks("lock", spec_only, *resolved, check=False)
    assert out.code == 2, out.stderr
    assert out.stderr.startswith("error: ")
    no_traceback(out)
    assert not (spec_only.parent / "requirements").exists()
    assert not (spec_only.parent / "cache").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("lock", "--cache-dir"),
        ("publish", "--output-dir"),
        ("export", "--output-dir"),
        ("local-export", "--cache-dir"),
    ],
)
def test_folder_options_naming_a_file_exit_2(spec_only: Path, args: tuple[str, str]) -> None:
    command, option = args
    out = stacks(command, spec_only, option, spec_only, check=False)
    assert out.code == 2
    assert out.stderr.startswith(f"error: {option} {spec_only}: not a folder")
    no_traceback(out)


def _fake_manifest(folder: Path, *, published: bool) -> None:
    """A stack manifest like a publish (with archive fields) or an export leaves."""
    entry = {"layer_name": "app-app", **({"archive_name": "app-app.tar.xz"} if published else {})}
    (folder / "__stacks__").mkdir(parents=True)
    (folder / "__stacks__" / "stack.json").write_text(
        json.dumps({"layers": {"applications": [entry], "frameworks": [], "runtimes": []}})
    )


def test_output_folders_that_would_overwrite_what_they_must_not(spec_only: Path) -> None:
    """Outputs never go into the cache, the lock files, a module, a foreign folder, or a
    folder of the other kind; the check runs before anything (so with --dry-run too)."""
    root = spec_only.parent
    foreign = root / "out" / "app-app" / "notes.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("mine\n")
    _fake_manifest(root / "published", published=True)
    _fake_manifest(root / "exported", published=False)
    cases = [
        ("export", root / "cache" / "build", "is inside the cache folder"),
        ("publish", root / "requirements" / "x", "is inside the lock files folder"),
        ("export", root / "app.py" / "x", "is inside a launch or support module"),
        ("export", root / "out", f"{root / 'out' / 'app-app'} exists and was not exported"),
        ("export", root / "published", "it holds published archives; exporting there"),
        ("publish", root / "exported", "it holds an exported stack; publishing there"),
        ("export", Path(os.fsdecode(bytes(root) + b"/bad\xffname")), "is not valid UTF-8"),
    ]
    for command, folder, message in cases:
        out = stacks(command, spec_only, "--output-dir", folder, "--dry-run", check=False)
        assert out.code == 2, (command, folder, out.stderr)
        assert message in out.stderr, out.stderr
        assert "hint: " in out.stderr
        no_traceback(out)
    assert foreign.read_text() == "mine\n"
    assert not (root / "cache" / "build").exists()


def test_export_never_replaces_a_source_folder(tmp_path: Path) -> None:
    """A runtime named like the folder of the launch module: exporting into the spec folder
    would replace that folder with the runtime."""
    spec = write_project(
        tmp_path / "proj",
        SPEC.replace('name = "cpython-3.12"', 'name = "mods"')
        .replace('runtime = "cpython-3.12"', 'runtime = "mods"')
        .replace('launch_module = "app.py"', 'launch_module = "mods/app.py"'),
        {"mods/app.py": APP},
    )
    out = stacks("export", spec, "--output-dir", spec.parent, "--dry-run", check=False)
    assert out.code == 2, out.stderr
    assert f"{spec.parent / 'mods'} would replace {spec.parent / 'mods' / 'app.py'}" in out.stderr
    no_traceback(out)


def test_bad_job_counts_and_unknown_options_name_the_command(spec_only: Path) -> None:
    for jobs in ("0", "-1", "abc"):
        out = stacks("build", spec_only, "-n", jobs, "--dry-run", check=False)
        assert out.code == 2 and "stacks build: error: argument -n/--jobs" in out.stderr
    out = stacks("publish", spec_only, "--bogus", check=False)
    assert out.code == 2
    assert out.stderr.startswith("usage: ") and "stacks publish: error: unrecognized" in out.stderr
    # Nothing recorded yet: verify says so instead of "all match".
    out = stacks("verify", spec_only)
    assert "nothing to verify" in out.stdout


def test_unknown_task_for_info_exits_2(spec_only: Path) -> None:
    out = stacks("info", spec_only, "lock:nothing", check=False)
    assert out.code == 2 and "unknown task 'lock:nothing'" in out.stderr
    no_traceback(out)


def test_allow_missing_turns_unmatched_patterns_into_warnings(spec_only: Path) -> None:
    out = stacks(
        "lock",
        spec_only,
        "--include",
        "nothing",
        "--reset-lock",
        "none",
        "--allow-missing",
        "--dry-run",
    )
    assert "warning: no layers match: nothing" in out.stderr
    assert "warning: --reset-lock: no layers match: none" in out.stderr


# ---------------------------------------------------------------- forget and clean


def outputs_of(spec: Path) -> set[str]:
    """The build folders and stamps of a project (what clean may remove)."""
    cache = spec.parent / "cache"
    found = (
        {f"build/{p.name}" for p in (cache / "build").iterdir()}
        if (cache / "build").exists()
        else set()
    )
    found |= {f"runtimes/{p.name}" for p in (cache / "runtimes").glob("*")}
    stamps = [p.relative_to(cache).parts for p in (cache / "stamps").rglob("*.json")]
    # Archive, export and stack manifest stamps sit in a folder per destination (a hash).
    found |= {
        "/".join(parts if len(parts) == 3 else (*parts[:2], "<key>", parts[3])) for parts in stamps
    }
    return found


@pytest.mark.slow
def published_files(*folders: Path) -> set[str]:
    """Archives, exported layers and metadata files in publish/export folders."""
    found: set[str] = set()
    for folder in folders:
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name != "__stacks__":
                found.add(f"{folder.name}/{path.name}")
        found |= {
            f"{folder.name}/{p.relative_to(folder).as_posix()}"
            for p in (folder / "__stacks__").rglob("*.json")
        }
    return found


def test_forget_and_clean_do_what_their_help_says(wheel_project: Path) -> None:
    spec = wheel_project
    options = ("--no-index", "--local-wheels", spec.parent / "wheels")
    stacks("build", spec, *options)
    locks = lock_files(spec)
    help_text = stacks("--help").stdout
    assert "forget the recorded state of tasks, so they run again" in help_text
    assert "remove what tasks produced (builds, archives, exports)" in help_text

    # forget --include: only the matching layer's tasks run again.
    out = stacks("forget", spec, "--include", "app-*")
    no_traceback(out)
    assert out.stdout == ""
    assert "forgot 3 task(s)" in out.stderr  # build:, archive: and export:app-app
    nothing = stacks("-q", "forget", spec, "--include", "nomatch*", "--allow-missing")
    assert (nothing.stdout, nothing.stderr) == ("", "")
    assert stacks("build", spec, *options, "--json").ran() == ["build:app-app"]

    # forget everything: every step runs again except locking (the lock files are sources).
    out = stacks("forget", spec)
    no_traceback(out)
    assert "--reset-lock" in out.stderr
    again = stacks("build", spec, *options, "--json")
    assert again.ran() == ["build:app-app", "build:framework-fw", "build:rt", "runtime:rt"]
    assert lock_files(spec) == locks

    # clean --include: only that layer's build, archive, export and stamps go; the stack
    # manifests then list what is left.
    stacks("publish", spec, *options)
    stacks("export", spec, *options)
    artifacts, exported = spec.parent / "_artifacts", spec.parent / "_export"
    before = outputs_of(spec)
    before_published = published_files(artifacts, exported)
    out = stacks("clean", spec, "--include", "app-*")
    no_traceback(out)
    assert before - outputs_of(spec) == {
        "build/app-app",
        "stamps/build/app-app.json",
        "stamps/build/app-app.manifest.json",  # archives have no tree manifest
        "stamps/archive/<key>/app-app.json",
        "stamps/export/<key>/app-app.json",
        "stamps/export/<key>/app-app.manifest.json",
    }
    assert before_published - published_files(artifacts, exported) == {
        "_artifacts/app-app.tar.xz",
        "_artifacts/__stacks__/env_metadata/app-app.json",
        "_export/app-app",
        "_export/__stacks__/env_metadata/app-app.json",
    }
    for folder in (artifacts, exported):
        stack = json.loads((folder / "__stacks__" / "stack.json").read_text(encoding="utf-8"))
        assert stack["layers"]["applications"] == []
        assert [e["layer_name"] for e in stack["layers"]["frameworks"]] == ["framework-fw"]
    assert stacks("build", spec, *options, "--json").ran() == ["build:app-app"]

    # A forgotten archive or export (no stamp) is still found where this run would write it.
    stacks("publish", spec, *options)
    stacks("export", spec, *options)
    stacks("forget", spec, "archive:app-app", "export:app-app")
    assert (artifacts / "app-app.tar.xz").is_file() and (exported / "app-app").is_dir()
    quiet = stacks("clean", spec, "archive:app-app", "export:app-app", "-q")
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert not (artifacts / "app-app.tar.xz").exists() and not (exported / "app-app").exists()

    # clean: every build folder, runtime, archive, export and stamp; the lock files stay.
    stacks("clean", spec)
    assert outputs_of(spec) == set()
    assert published_files(artifacts, exported) == set()
    assert lock_files(spec) == locks
    rebuilt = stacks("build", spec, *options, "--json")
    assert rebuilt.ran("lock") == []
    assert rebuilt.ran("build") == ["build:app-app", "build:framework-fw", "build:rt"]


def test_clean_and_forget_reject_unknown_tasks(spec_only: Path) -> None:
    for command in ("clean", "forget"):
        out = stacks(command, spec_only, "build:nothing", check=False)
        assert out.code == 2 and "unknown task: build:nothing" in out.stderr
        no_traceback(out)


PINNED_PATCH_SPEC = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@{version}"
requirements = []

[[frameworks]]
name = "fw"
runtime = "cpython-3.11"
requirements = []
"""


@pytest.mark.slow
def test_a_pinned_patch_release_offline_uses_another_only_when_asked(tmp_path: Path) -> None:
    """cpython@3.11.Z not installed (pyenv has another 3.11): opt in, get a warning, metadata."""
    versions = Path.home() / ".pyenv" / "versions"
    installed = sorted(p.name for p in versions.glob("3.11.*"))
    if not installed:
        pytest.skip("no pyenv CPython 3.11")
    newest = max(installed, key=lambda v: tuple(map(int, v.split("."))))
    pinned = next(f"3.11.{n}" for n in range(30) if f"3.11.{n}" not in installed)
    spec = write_project(tmp_path / "p", PINNED_PATCH_SPEC.format(version=pinned), {})

    refused = stacks("lock", spec, check=False)
    assert refused.code == 1
    assert f"no local CPython {pinned} found" in refused.stderr
    assert (
        "--runtime-any-patch" in refused.stderr and "STACKS_RUNTIME_ANY_PATCH=1" in refused.stderr
    )
    no_traceback(refused)
    assert not (spec.parent / "requirements").exists()

    allowed = stacks("lock", spec, env={"STACKS_RUNTIME_ANY_PATCH": "1"})
    warning = (
        f"warning: runtime 'cpython-3.11': CPython {pinned} is not installed; "
        f"using the local CPython {newest} instead"
    )
    assert warning in allowed.stderr
    assert (spec.parent / "requirements" / "framework-fw").is_dir()

    out = tmp_path / "export"
    stacks("export", spec, "--runtime-any-patch", "--output-dir", out)
    metadata = {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in (out / "__stacks__" / "env_metadata").glob("*.json")
    }
    assert metadata["cpython-3.11"]["python_implementation"] == f"cpython@{newest}"
    assert metadata["framework-fw"]["python_implementation"] == f"cpython@{newest}"
    assert metadata["cpython-3.11"]["runtime_source"]["requested"] == pinned
    # Turning the opt-in off again is not silent either: the runtime is refused anew.
    again = stacks("export", spec, "--output-dir", out, check=False)
    assert again.code == 1 and "--runtime-any-patch" in again.stderr
