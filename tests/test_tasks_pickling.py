"""Task arguments survive pickling, as doit's -n N workers need under spawn and forkserver."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

from stacks.lock.metadata import LockOptions
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps import all_tasks
from stacks.spec import load_spec

REPO = Path(__file__).resolve().parent.parent


def test_every_task_action_and_check_pickles_to_an_equal_context(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("cache", "_*")
    )
    spec = load_spec(tmp_path / "specs" / "demo.toml")
    ctx = RunContext(
        spec=spec,
        cache_dir=tmp_path / "cache",
        lock_options=LockOptions(),
        output_dir=tmp_path / "out",
        export_dir=tmp_path / "export",
        forced=frozenset({"build:app-demo"}),
    )
    tasks = [task for _, task in all_tasks(ctx)]
    assert {task["name"] for task in tasks} >= {"cpython-3.12", "framework-attrs", "app-demo"}
    for task in tasks:
        (action, args), (check, check_args) = task["actions"][0], task["uptodate"][0]
        copy = pickle.loads(pickle.dumps((action, args, check, check_args)))
        assert copy[0] is action and copy[2] is check  # module-level functions, by reference
        assert copy[1] == args and copy[3] == check_args
        context = next(arg for arg in copy[1] if isinstance(arg, RunContext))
        assert context.spec.layer("app-demo") == spec.layer("app-demo")
