"""The registered steps, in pipeline order, and what is asked of all of them at once.

Every step writes a stamp last (inputs key + what it produced). A task is up to date when
its stamp's inputs key equals the key computed now from small files (lock metadata, module
hashes, the stamps of the steps it consumes) and its outputs are still in place. Nothing
here depends on doit's own database, so losing or corrupting it never causes a wrong result
or a needless rebuild.

Task generation, `info`, `list --status`, `clean`, `forget` and `verify` go through
`STEPS` and `task_step`; adding a step kind means adding one `Step` object here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from stacks.pipeline.run_context import RunContext, builds_here, task_name
from stacks.pipeline.steps.archive import ARCHIVE
from stacks.pipeline.steps.base import STACK_TASK, StackManifestStep, Step, step_named, task_step
from stacks.pipeline.steps.build import BUILD
from stacks.pipeline.steps.export import EXPORT
from stacks.pipeline.steps.lock import LOCK
from stacks.pipeline.steps.publish import PublishStep
from stacks.pipeline.steps.runtime import RUNTIME
from stacks.spec import LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding

__all__ = [
    "ARCHIVE",
    "BUILD",
    "EXPORT",
    "LOCK",
    "RUNTIME",
    "STACK_TASK",
    "STEPS",
    "PublishStep",
    "StackManifestStep",
    "Step",
    "all_tasks",
    "explain",
    "generators",
    "is_current",
    "step_named",
    "task_step",
    "verify_stack",
]

STEPS: tuple[Step, ...] = (RUNTIME, LOCK, BUILD, ARCHIVE, EXPORT)
PUBLISH_STEPS: tuple[PublishStep, ...] = tuple(s for s in STEPS if isinstance(s, PublishStep))


def _generator(step: Step) -> Callable[[RunContext], Iterator[dict[str, Any]]]:
    def generate(ctx: RunContext) -> Iterator[dict[str, Any]]:
        return step.tasks(ctx)

    generate.__doc__ = step.doc
    return generate


def generators() -> dict[str, Callable[[RunContext], Iterator[dict[str, Any]]]]:
    """task basename -> the generator of its task dicts (doit's task-creator shape)."""
    return {step.name: _generator(step) for step in STEPS}


def all_tasks(ctx: RunContext) -> Iterator[tuple[str, dict[str, Any]]]:
    """(basename, task dict) for every task of the stack."""
    for step in STEPS:
        for task in step.tasks(ctx):
            yield step.name, task


def is_current(ctx: RunContext, task: str) -> bool:
    """The up-to-date check of any task."""
    return task_step(task).is_current(ctx, task.partition(":")[2])


def explain(ctx: RunContext, task: str) -> list[str]:
    """Why a task is not up to date, in words."""
    return task_step(task).reasons(ctx, task.partition(":")[2])


def verify_stack(ctx: RunContext, layers: Sequence[LayerSpec], spec_arg: str) -> list[Finding]:
    """What every step made for `layers`, checked against what it recorded, by full content."""
    findings: list[Finding] = []
    for layer in layers:
        for step in STEPS:
            if not step.needs_this_platform or builds_here(ctx, layer):
                findings += step.verify(ctx, layer, spec_arg)
    # The stack manifests of the folders written (one per publish or export destination).
    for step in STEPS:
        if step.manifest is not None:
            findings += step.manifest.verify(ctx, None, spec_arg)
    return findings


def task_docs(ctx: RunContext) -> dict[str, str]:
    """task name -> its one-line description."""
    return {task_name(base, task["name"]): task.get("doc", "") for base, task in all_tasks(ctx)}
