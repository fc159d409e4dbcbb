"""Scale-out over a CI matrix: `stacks ci matrix`, shard records, `stacks merge`, the workflow.

The end-to-end test plays the CI run on this one machine: a lock job (which also publishes
everything itself with --tag-outputs, as one machine would), then each planned shard in its
own copy of the project with its own cache (as separate runners), then the merge. The
merged release must be byte-identical to the single-machine publish.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from projects import (
    EXCLUDE_NEWER,
    copy_project,
    no_traceback,
    private_uv_cache,
    snapshot,
    write_project,
)
from stackrun import stacks

# Two independent runtime trees (3.12: runtime, framework, app; 3.11: runtime, app).
TWO_TREES = f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = ["six"]
platforms = ["linux_x86_64"]

[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11"
requirements = []
platforms = ["linux_x86_64"]

[[frameworks]]
name = "fw"
runtime = "cpython-3.12"
requirements = ["attrs"]

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["fw"]
requirements = ["idna"]

[[applications]]
name = "other"
launch_module = "other.py"
runtime = "cpython-3.11"
requirements = []
"""
MODULES = {"app.py": "import attrs, idna, six\nprint('app')\n", "other.py": "print('other')\n"}

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


def project(folder: Path, spec: str = TWO_TREES) -> Path:
    """The two-tree project in `folder`; returns its spec."""
    return write_project(folder, spec, MODULES)


def run_argv(argv: list[str], cwd: Path, *, check: bool = True) -> Any:
    """Run a planned `stacks ...` argv (as CI would, in the project folder)."""
    assert argv[0] == "stacks"
    return stacks(*argv[1:], cwd=cwd, check=check)


# ---------------------------------------------------------------- the plan (fast)


def test_two_runtime_trees_make_two_shards_per_platform(tmp_path: Path) -> None:
    """Each runtime tree is its own shard; --max-shards merges trees of one platform."""
    spec = project(tmp_path, TWO_TREES.replace('platforms = ["linux_x86_64"]\n', "", 1))
    plan = stacks("ci", "matrix", spec).data
    shards = {shard["id"]: shard for shard in plan["shards"]}
    assert plan["lock"]["command"] == ["stacks", "lock", "stack.toml"]
    assert shards["linux_x86_64-1"]["layers"] == ["cpython-3.12", "framework-fw", "app-app"]
    assert shards["linux_x86_64-2"]["layers"] == ["cpython-3.11", "app-other"]
    assert shards["linux_x86_64-2"]["command"] == [
        "stacks",
        "publish",
        "stack.toml",
        "--include",
        "cpython-3.11",
        "--include",
        "app-other",
        "--output-dir",
        "shard-linux_x86_64-2",
        "--tag-outputs",
        "--shard-record",
    ]
    # The 3.12 tree targets all six platforms, the 3.11 tree only linux_x86_64.
    assert len(shards) == 7
    runners = {shard["platform"]: shard["runner"] for shard in plan["shards"]}
    assert runners == {
        "linux_x86_64": "ubuntu-latest",
        "linux_aarch64": "ubuntu-24.04-arm",
        "macosx_arm64": "macos-14",
        "macosx_x86_64": "macos-13",
        "win_amd64": "windows-latest",
        "win_arm64": "windows-11-arm",
    }
    # Every layer of every platform is in exactly one shard, with the layers below it.
    for shard in plan["shards"]:
        assert not any(
            set(shard["layers"]) & set(other["layers"])
            for other in plan["shards"]
            if other is not shard and other["platform"] == shard["platform"]
        )
    merged = stacks("ci", "matrix", spec, "--max-shards", "6", "--format", "github")
    assert "\n" not in merged.stdout.strip()  # one line, for $GITHUB_OUTPUT
    include = json.loads(merged.stdout)["include"]
    assert len(include) == 6
    assert include[0]["layers"] == [
        "cpython-3.12",
        "cpython-3.11",
        "framework-fw",
        "app-app",
        "app-other",
    ]
    # Another archive format: every shard's publish says it (the default is left out).
    zst = stacks("ci", "matrix", spec, "--archive-format", "tar.zst").data["shards"]
    for shard in zst:
        at = shard["command"].index("--format")
        assert shard["command"][at + 1] == "tar.zst" and "--format tar.zst" in shard["command_line"]
    assert not any("--format" in shard["command"] for shard in plan["shards"])
    too_few = stacks("ci", "matrix", spec, "--max-shards", "5", check=False)
    assert too_few.code == 2
    assert "targets 6 platforms" in too_few.stderr and "--max-shards 6" in too_few.stderr
    no_traceback(too_few)


def test_generated_workflow_parses_and_its_needs_exist(tmp_path: Path) -> None:
    """The GitHub workflow and the GitLab child pipeline are YAML whose `needs` name real jobs."""
    (tmp_path / ".git").mkdir()
    spec = project(tmp_path / "stacks dir")
    stacks("ci", "workflow", spec, "--github")
    path = tmp_path / ".github" / "workflows" / "stacks.yml"
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    assert set(jobs) == {"lock", "shard", "merge"}
    for job in jobs.values():
        needs = job.get("needs", [])
        for name in [needs] if isinstance(needs, str) else needs:
            assert name in jobs
    assert workflow["defaults"]["run"]["working-directory"] == "stacks dir"
    assert "fromJSON(needs.lock.outputs.matrix)" in jobs["shard"]["strategy"]["matrix"]
    assert jobs["shard"]["runs-on"] == "${{ matrix.runner }}"
    lock_steps = [step.get("run", "") for step in jobs["lock"]["steps"]]
    assert "stacks lock stack.toml" in lock_steps
    assert any("stacks ci matrix stack.toml --format github" in run for run in lock_steps)
    uploads = [s["with"]["path"] for s in jobs["lock"]["steps"] if "upload" in s.get("uses", "")]
    assert uploads == ["stacks dir/requirements"]
    merge_steps = [step.get("run", "") for step in jobs["merge"]["steps"]]
    assert "stacks merge release shards/* --spec stack.toml" in merge_steps
    assert "stacks verify --release release" in merge_steps
    # Never over an existing file without --force.
    again = stacks("ci", "workflow", spec, "--github", check=False)
    assert again.code == 2 and "already exists" in again.stderr
    stacks("ci", "workflow", spec, "--github", "--force", "--archive-format", "tar.zst")
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    lock_steps = [step.get("run", "") for step in workflow["jobs"]["lock"]["steps"]]
    assert any(
        "stacks ci matrix stack.toml --format github --archive-format tar.zst" in run
        for run in lock_steps
    )

    child = yaml.safe_load(stacks("ci", "matrix", spec, "--format", "gitlab").stdout)
    jobs = {name: job for name, job in child.items() if isinstance(job, dict) and "script" in job}
    assert {"shard-linux_x86_64-1", "shard-linux_x86_64-2", "stacks-merge"} <= set(jobs)
    for job in jobs.values():
        for need in job.get("needs", []):
            assert "pipeline" in need or need["job"] in jobs
            assert job["stage"] in child["stages"]


def test_init_ci_github_writes_the_workflow(tmp_path: Path) -> None:
    """`stacks init --ci github` adds the workflow to the starter project."""
    stacks("init", tmp_path / "new", "--ci", "github")
    workflow = yaml.safe_load(
        (tmp_path / "new" / ".github" / "workflows" / "stacks.yml").read_text(encoding="utf-8")
    )
    assert set(workflow["jobs"]) == {"lock", "shard", "merge"}


def test_a_shard_never_locks(tmp_path: Path) -> None:
    """--shard-record refuses, before building, a layer without a valid lock."""
    spec = project(tmp_path)
    outcome = stacks(
        "publish", spec, "--include", "cpython-3.11", "--tag-outputs", "--shard-record", check=False
    )
    assert outcome.code == 1
    assert "no valid lock for cpython-3.11" in outcome.stderr
    assert not (tmp_path / "cache" / "build").exists()
    untagged = stacks("publish", spec, "--shard-record", check=False)
    assert untagged.code == 2 and "--shard-record needs --tag-outputs" in untagged.stderr
    no_traceback(outcome, untagged)


def test_merge_refuses_folders_that_are_not_shards(tmp_path: Path) -> None:
    """Every unusable folder is named at once; nothing is written."""
    (tmp_path / "plain").mkdir()
    outcome = stacks(
        "merge", tmp_path / "out", tmp_path / "plain", tmp_path / "absent", check=False
    )
    assert outcome.code == 1
    assert "plain: not a shard folder" in outcome.stderr
    assert "absent: no such folder" in outcome.stderr
    assert not (tmp_path / "out").exists()
    no_traceback(outcome)


# ---------------------------------------------------------------- lock once, shard, merge


ARCHIVE_FORMAT = "tar.zst"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The lock job (plus a single-machine publish), each shard in its own copy, the plan."""
    root = tmp_path_factory.mktemp("ci")
    spec = project(root / "lock-job")
    # tar.zst: the same merge, without compressing two runtimes with xz three times.
    plan = stacks("ci", "matrix", spec, "--archive-format", ARCHIVE_FORMAT).data
    run_argv(plan["lock"]["command"], spec.parent)
    stacks(
        "publish",
        spec,
        "--tag-outputs",
        "--output-dir",
        root / "single",
        "--format",
        ARCHIVE_FORMAT,
    )
    shards = []
    for shard in plan["shards"]:
        # A runner: a fresh checkout with the lock job's requirements/, its own cache.
        copy = copy_project(spec, root / f"runner-{shard['id']}")
        run_argv(shard["command"], copy.parent)
        shards.append(copy.parent / shard["output_dir"])
    return {"root": root, "spec": spec, "plan": plan, "shards": shards}


@pytest.mark.slow
def test_merged_release_is_the_single_machine_publish(ci_run: dict[str, Any]) -> None:
    """Two shards merge into exactly what one machine publishes; merging again is a no-op."""
    root, shards = ci_run["root"], ci_run["shards"]
    assert len(shards) == 2
    record = json.loads((shards[1] / "__stacks__" / "shard.json").read_text(encoding="utf-8"))
    assert record["platform"] == "linux_x86_64"
    assert record["layers"] == ["cpython-3.11", "app-other"]
    assert set(record["locks"]) == {
        "cpython-3.12",
        "cpython-3.11",
        "framework-fw",
        "app-app",
        "app-other",
    }
    assert all(value.startswith("xxh3_128:") for value in record["locks"].values())
    release = root / "release"
    merged = stacks("merge", release, *shards, "--spec", ci_run["spec"])
    assert "5 archives for linux_x86_64 from 2 shards" in merged.stderr
    single = snapshot(root / "single")
    assert sorted(snapshot(release)) == sorted(single)
    assert snapshot(release) == single
    assert "__stacks__/stack-linux_x86_64.json" in single

    mtimes = {path: path.stat().st_mtime_ns for path in release.rglob("*")}
    again = stacks("merge", release, *shards)  # the shard records' stack, no --spec
    assert "already up to date" in again.stderr
    assert {path: path.stat().st_mtime_ns for path in release.rglob("*")} == mtimes

    checked = stacks("verify", "--release", release, "--json").data
    assert checked["ok"] and len(checked["findings"]) == 5
    assert all(finding["status"] == "ok" for finding in checked["findings"])
    stacks("verify", "--output-dir", release)
    # With the spec, from a project whose cache never saw this folder: the metadata decides.
    with_spec = stacks("verify", ci_run["spec"], "--output-dir", release, "--json").data
    archives = [  # the layers' archives (the stack manifest is checked as `__stack__`)
        f for f in with_spec["findings"] if f["item"] == "archive" and f["layer"] != "__stack__"
    ]
    assert len(archives) == 5 and all(f["status"] == "ok" for f in archives)
    # A damaged archive is found.
    victim = next(release.glob(f"app-other-*.{ARCHIVE_FORMAT}"))
    data = victim.read_bytes()
    victim.unlink()  # a hard link to the shard's copy: replace, never edit in place
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    damaged = stacks("verify", "--release", release, check=False)
    assert damaged.code == 1 and "DIFFERS" in damaged.stdout and victim.name in damaged.stdout


@pytest.mark.slow
def test_merge_refusals(ci_run: dict[str, Any], tmp_path: Path) -> None:
    """Different locks, disagreeing archives and missing layers: all named, nothing written."""
    first, second = ci_run["shards"]
    out = tmp_path / "release"

    missing = stacks("merge", out, first, check=False)
    assert missing.code == 1
    assert "cpython-3.11 targets linux_x86_64, but no shard published it there" in missing.stderr
    assert "app-other targets linux_x86_64" in missing.stderr
    assert not out.exists()

    # A runner whose checkout locked cpython-3.11 again, with another requirement.
    spec = copy_project(ci_run["spec"], tmp_path / "relocking-runner")
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace("requirements = []", 'requirements = ["six"]', 1), "utf-8")
    stacks("lock", spec)
    plan = stacks("ci", "matrix", spec, "--archive-format", ARCHIVE_FORMAT).data
    run_argv(plan["shards"][1]["command"], spec.parent)
    relocked = spec.parent / plan["shards"][1]["output_dir"]
    different = stacks("merge", out, first, relocked, check=False)
    assert different.code == 1
    assert "were built from different locks: cpython-3.11" in different.stderr
    assert not out.exists()

    # The second runner publishes its layers again, as tar.gz: same layers, other archives.
    runner = second.parent
    command = plan["shards"][1]["command"]
    rebuilt = runner / "shard-again"
    at = command.index("--output-dir")
    run_argv([*command[: at + 1], rebuilt.name, *command[at + 2 :], "--format", "tar.gz"], runner)
    disagree = stacks("merge", out, first, second, rebuilt, check=False)
    assert disagree.code == 1
    assert "shards disagree on app-other (linux_x86_64)" in disagree.stderr
    assert "shards disagree on cpython-3.11 (linux_x86_64)" in disagree.stderr
    assert not out.exists()

    # Every problem at once, and an existing release is left as it was.
    stacks("merge", out, first, second)
    before = snapshot(out)
    everything = stacks("merge", out, relocked, rebuilt, check=False)
    assert everything.code == 1
    assert "different locks" in everything.stderr
    assert "cpython-3.12 targets linux_x86_64" in everything.stderr
    assert snapshot(out) == before
    spec_says = stacks(
        "merge", out, first, second, "--spec", ci_run["spec"].with_name("more.toml"), check=False
    )
    assert spec_says.code == 2  # no such spec: a usage error
    no_traceback(missing, different, disagree, everything, spec_says)
