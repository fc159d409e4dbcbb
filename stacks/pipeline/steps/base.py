"""The step protocol: what every kind of step (runtime, lock, build, archive, export, stack
manifest) knows about itself, and the generic parts they share.

A step kind is one `Step` object. It knows which layers it has a task for, what each task
needs, its inputs, its up-to-date check, its action, what it produced (for `clean`, `info`,
`forget`) and why it would run (`--dry-run`, `list --status`, `info`), and how to verify what
it made. Task generation and the commands about tasks only ever iterate over the registered
steps (`stacks.pipeline.steps`); nothing outside a step's own module asks for it by name.

Actions and checks are module-level functions of (RunContext, layer name), so tasks pickle
for parallel runs; the work itself is done by the lock, runtime, build and publish parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from stacks import __version__, hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import RunContext, builds_here, task_name
from stacks.spec import LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding

STACK_TASK = "__stack__"  # the layer name of a destination's stack manifest task

Action = Callable[[RunContext, str], Any]
StepT = TypeVar("StepT", bound="Step")
Check = Callable[[RunContext, str], bool]


class Step:
    """One kind of step of a layer: its tasks, inputs, check, action, products and reasons."""

    name: str  # the task basename (`build` in `build:app-demo`) and its stamp folder
    doc: str  # what the step does, for `doit list`
    format: ClassVar[int] = 1  # bump when the layout the step produces changes: redone
    needs_this_platform: ClassVar[bool] = True  # only layers targeting this machine have it
    keeps_stamps: ClassVar[bool] = True  # False: its truth is elsewhere (committed lock files)
    # False: stamps not fsynced, for a step whose output tree is not fsynced either (its
    # up-to-date check stats the tree, so a file a power cut emptied is seen).
    durable_stamps: ClassVar[bool] = True
    manifest: StackManifestStep | None = None  # a stack manifest after its layer tasks

    @staticmethod
    def action(ctx: RunContext, env_name: str) -> Any:
        """Do the step for one layer (a module-level function in each step)."""
        raise NotImplementedError

    @staticmethod
    def check(ctx: RunContext, env_name: str) -> bool:
        """The up-to-date check of one layer's task (a module-level function in each step)."""
        raise NotImplementedError

    # ------------------------------------------------------------ tasks

    def layers(self, ctx: RunContext) -> list[LayerSpec]:
        """The layers this step has a task for in this run."""
        return [
            layer
            for layer in ctx.spec.layers
            if not self.needs_this_platform or builds_here(ctx, layer)
        ]

    def needs(self, ctx: RunContext, layer: LayerSpec) -> list[str]:
        """The tasks a layer's task needs done first."""
        return []

    def describe(self, ctx: RunContext, layer: LayerSpec) -> str:
        """One line: what the task of a layer does."""
        return f"{self.name} {layer.env_name}"

    def targets(self, ctx: RunContext, env_name: str) -> list[Path]:
        """The files doit records as the task's targets."""
        return [self.stamp_path(ctx, env_name)]

    def tasks(self, ctx: RunContext) -> Iterator[dict[str, Any]]:
        """The doit task dicts of this step (and of its stack manifest, if it has one)."""
        names = []
        for layer in self.layers(ctx):
            names.append(task_name(self.name, layer.env_name))
            yield {
                "name": layer.env_name,
                "actions": [(run_step, [self.action, ctx, layer.env_name])],
                "clean": [(remove_task_products, [ctx, self.name, layer.env_name])],
                "uptodate": [(self.check, [ctx, layer.env_name])],
                "task_dep": self.needs(ctx, layer),
                "targets": [os.fspath(p) for p in self.targets(ctx, layer.env_name)],
                "doc": self.describe(ctx, layer),
                "verbosity": 2,
            }
        if self.manifest is not None and self.manifest.enabled(ctx):
            yield self.manifest.task(ctx, _selected_tasks(ctx, names))

    def task_names(self, ctx: RunContext, layers: Sequence[LayerSpec]) -> list[str]:
        """The task names this step has for `layers` (and its stack manifest task)."""
        names = [
            task_name(self.name, layer.env_name)
            for layer in layers
            if not self.needs_this_platform or builds_here(ctx, layer)
        ]
        if self.manifest is not None:
            names.append(task_name(self.name, STACK_TASK))
        return names

    # ------------------------------------------------------------ stamps and reasons

    def stamp_path(self, ctx: RunContext, env_name: str) -> Path:
        """The stamp this step writes for a layer in this run."""
        return ctx.cache_dir / "stamps" / self.name / f"{env_name}.json"

    def inputs(self, ctx: RunContext, env_name: str) -> dict[str, Any] | None:
        """The current inputs of a layer's task (None when a prerequisite is missing)."""
        return None

    def is_current(self, ctx: RunContext, env_name: str) -> bool:
        """Whether a layer's task is up to date (its check, as doit runs it)."""
        return bool(self.check(ctx, env_name))

    def drift(self, ctx: RunContext, env_name: str) -> list[str]:
        """How the outputs differ from what the stamp recorded (cheap, stat only)."""
        return []

    never_done: str = "never done (no stamp)"

    def reasons(self, ctx: RunContext, env_name: str) -> list[str]:
        """Why a layer's task is not up to date, in words."""
        if task_name(self.name, env_name) in ctx.forced:
            return ["forced (--clean or --force)"]
        inputs = self.inputs(ctx, env_name)
        if inputs is None:
            return ["what it is made from is not there yet (an earlier step must run first)"]
        stamp = hashing.read_stamp(self.stamp_path(ctx, env_name))
        if stamp is None:
            return [self.never_done]
        recorded = stamp.get("input_detail") or {}
        changed = [
            name
            for name in sorted(set(inputs) | set(recorded))
            if inputs.get(name) != recorded.get(name)
        ]
        if changed:
            return [f"{name} changed" for name in changed]
        return self.drift(ctx, env_name) or ["outputs missing or changed since the last run"]

    def matching_stamp(
        self, ctx: RunContext, env_name: str, inputs: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The stamp of a layer's task if it was made from exactly these inputs, else None."""
        if inputs is None or task_name(self.name, env_name) in ctx.forced:
            return None
        stamp = hashing.read_stamp(self.stamp_path(ctx, env_name))
        if stamp is None or stamp.get("inputs") != hashing.hash_json(inputs):
            return None
        return stamp

    def write_stamp(
        self, ctx: RunContext, env_name: str, inputs: dict[str, Any], outputs: dict[str, Any]
    ) -> None:
        """Record a finished task: its inputs (hash and detail) and what it produced. Written last."""
        hashing.write_stamp(
            self.stamp_path(ctx, env_name),
            {
                "step": self.name,
                "layer": env_name,
                "inputs": hashing.hash_json(inputs),
                "input_detail": inputs,
                "outputs": outputs,
                "stacks_version": __version__,
                "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            },
            durable=self.durable_stamps,
        )

    def tree_manifest_path(self, ctx: RunContext, env_name: str) -> Path:
        """Where the tree manifest of a layer's output folder is kept (next to its stamp)."""
        return self.stamp_path(ctx, env_name).with_suffix(".manifest.json")

    def recorded_stamps(self, ctx: RunContext, env_name: str) -> list[Path]:
        """Every stamp a layer's task has (one; publish steps: one per destination)."""
        return [self.stamp_path(ctx, env_name)] if self.keeps_stamps else []

    # ------------------------------------------------------------ products

    def outputs_of(self, ctx: RunContext, env_name: str, outputs: dict[str, Any]) -> list[Path]:
        """The files and folders a stamp's recorded outputs name."""
        return []

    def products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """What a layer's task produced, as its stamps record it (lock files are sources: none)."""
        products: list[Path] = []
        for stamp in self.recorded_stamps(ctx, env_name):
            outputs = (hashing.read_stamp(stamp) or {}).get("outputs") or {}
            products += [stamp, stamp.with_suffix(".manifest.json")]
            products += self.outputs_of(ctx, env_name, outputs)
        return list(dict.fromkeys(products))

    def remove_products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """Remove what a layer's task produced; return what was there to remove."""
        from stacks.atomic import remove_tree

        removed = []
        for path in self.products(ctx, env_name):
            if path.exists() or path.is_symlink():
                remove_tree(path)
                removed.append(path)
        return removed

    def forget(self, ctx: RunContext, env_name: str) -> bool:
        """Drop a layer's stamps so its task runs again; False when the step keeps none."""
        for stamp in self.recorded_stamps(ctx, env_name):
            stamp.unlink(missing_ok=True)
        return self.keeps_stamps

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """Check what the step made for a layer against what it recorded, by content."""
        return []

    def next_steps(self, ctx: RunContext, layers: Sequence[LayerSpec]) -> list[str]:
        """Lines for the user after a successful run: where the results are, how to run them."""
        return []


class StackManifestStep(Step):
    """The stack manifest of a publish or export folder: one task after the layers' tasks.

    Its task is `<parent step>:__stack__`; its stamp is kept per destination, in
    `stamps/manifest/<destination key>/<parent step>.json`.
    """

    stamp_folder: ClassVar[str] = "manifest"

    def __init__(self, parent: Any, action: Action, check: Check) -> None:
        self.parent = parent  # the publish step whose folder it describes
        self.name = parent.name
        self.action = action  # type: ignore[method-assign]
        self.check = check  # type: ignore[method-assign]
        self.never_done = parent.never_done

    def enabled(self, ctx: RunContext) -> bool:
        """Whether this run writes into the parent step's folder."""
        return self.parent.folder(ctx) is not None

    def layers(self, ctx: RunContext) -> list[LayerSpec]:
        """None: the manifest is one task for the whole stack."""
        return []

    def is_current(self, ctx: RunContext, env_name: str) -> bool:
        """The manifest's check (it takes the parent step's name, as its task passes it)."""
        return bool(self.check(ctx, self.name))

    def task(self, ctx: RunContext, layer_tasks: list[str]) -> dict[str, Any]:
        """The doit task dict of the stack manifest, after `layer_tasks`."""
        return {
            "name": STACK_TASK,
            "actions": [(run_step, [self.action, ctx, self.name])],
            "clean": [(remove_task_products, [ctx, self.name, STACK_TASK])],
            "uptodate": [(self.check, [ctx, self.name])],
            "task_dep": layer_tasks,
            "targets": [os.fspath(self.stamp_path(ctx, STACK_TASK))],
            "doc": f"write the stack manifest of the {self.parent.verb} folder",
            "verbosity": 2,
        }

    def stamp_path(self, ctx: RunContext, env_name: str) -> Path:
        """`stamps/manifest/<destination key>/<parent step>.json`."""
        key = self.parent.destination_key(ctx)
        return ctx.cache_dir / "stamps" / self.stamp_folder / key / f"{self.name}.json"

    def path(self, ctx: RunContext) -> Path:
        """The stack manifest file of the parent step's folder."""
        return self.parent.root(ctx) / "__stacks__" / f"stack{self.parent.tag(ctx)}.json"

    def inputs(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """Inputs of a stack manifest: the per-layer metadata files it gathers."""
        files = [self.parent.metadata_path(ctx, layer.env_name) for layer in ctx.spec.layers]
        return {"layer metadata": sorted([p.name, hashing.hash_file_or_none(p)] for p in files)}

    def recorded_stamps(self, ctx: RunContext, env_name: str) -> list[Path]:
        """This run's stamp and those of every other destination recorded."""
        return stamps_of_every_destination(self.stamp_path(ctx, env_name))

    def products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """The stamps and the stack manifest files they recorded (and this run's, if there)."""
        products: list[Path] = []
        for stamp in self.recorded_stamps(ctx, env_name):
            outputs = (hashing.read_stamp(stamp) or {}).get("outputs") or {}
            products.append(stamp)
            if isinstance(outputs.get("path"), str):
                products.append(Path(outputs["path"]))
        if self.enabled(ctx):
            products.append(self.path(ctx))
        return list(dict.fromkeys(products))

    def remove_products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """Remove the manifests and stamps, then each destination's stamp folder once empty."""
        stamps = self.recorded_stamps(ctx, env_name)
        removed = super().remove_products(ctx, env_name)
        remove_empty_parents(stamps)
        return removed

    def verify(self, ctx: RunContext, layer: LayerSpec | None, spec_arg: str) -> list[Finding]:
        """Every recorded stack manifest (`layer`: None, it is the stack's) against its stamp.

        Deploying a folder starts from its stack manifest: a missing or edited one is a
        difference, fixed by writing the folder's outputs again (only the manifest is redone).
        """
        from stacks.pipeline.verify import Finding, verify_stack_manifest

        given = self.parent.folder(ctx)
        findings = []
        for stamp_path in self.recorded_stamps(ctx, STACK_TASK):
            outputs = (hashing.read_stamp(stamp_path) or {}).get("outputs") or {}
            if not isinstance(outputs.get("path"), str):
                continue
            path = Path(outputs["path"])
            folder = path.parent.parent  # <folder>/__stacks__/stack.json
            if given is not None and folder != given:
                continue
            fix = self.parent.rewrite_command(spec_arg, folder, self._a_layer_stamp(stamp_path))
            findings.append(verify_stack_manifest(self.name, STACK_TASK, path, outputs, fix))
        return findings or [Finding(STACK_TASK, self.name, "", "absent")]

    def _a_layer_stamp(self, manifest_stamp: Path) -> tuple[str, dict[str, Any]] | None:
        """(layer, stamp) of one layer written to the same destination as a manifest stamp.

        Both are kept under the destination's key: `<stamps>/manifest/<key>/<step>.json`
        and `<stamps>/<step>/<key>/<layer>.json`.
        """
        stamps = manifest_stamp.parent.parent.parent / self.name / manifest_stamp.parent.name
        for path in sorted(stamps.glob("*.json")):
            if path.name.endswith(".manifest.json"):
                continue
            stamp = hashing.read_stamp(path)
            if stamp is not None:
                return path.stem, stamp
        return None


# ---------------------------------------------------------------- shared by every step


@dataclass(frozen=True)
class StepFailed:
    """A step that failed for a reason the user can fix: the message shown, without traceback."""

    message: str
    exit_code: int = 1

    def get_msg(self) -> str:
        """The message (as doit's failures give theirs)."""
        return self.message


def call_step(action: Action, ctx: RunContext, env_name: str) -> Any:
    """Run a step's action: its values (None or a dict), or StepFailed (an OSError too: full
    disk, read-only folder)."""
    try:
        return action(ctx, env_name)
    except OSError as exc:
        from stacks.errors import DiskError

        return task_failure(DiskError.from_os_error(exc), env_name)


def run_step(action: Action, ctx: RunContext, env_name: str) -> Any:
    """A step's doit action: `call_step`, with StepFailed handed to doit as its TaskFailed."""
    result = call_step(action, ctx, env_name)
    if isinstance(result, StepFailed):
        from doit.exceptions import TaskFailed

        return TaskFailed(result.message)
    return result


def task_failure(exc: StacksError, layer: str) -> StepFailed:
    """A step's failure carrying our message (no traceback) for a user-caused error."""
    message = str(exc)
    if layer not in message:
        message = f"layer '{layer}': {message}"
    return StepFailed(message, exc.exit_code)


_REGISTERED: dict[str, Step] = {}


def register(step: StepT) -> StepT:
    """Add a step to the registry under its task basename."""
    _REGISTERED[step.name] = step
    return step


def step_named(name: str) -> Step:
    """The registered step whose tasks are `<name>:...`."""
    return _REGISTERED[name]


def task_step(task: str) -> Step:
    """The step that runs a task: a layer's step, or a publish step's stack manifest."""
    basename, _, env_name = task.partition(":")
    step = _REGISTERED[basename]
    if env_name == STACK_TASK and step.manifest is not None:
        return step.manifest
    return step


def remove_task_products(ctx: RunContext, basename: str, env_name: str) -> list[Path]:
    """`doit clean`: remove what one task produced."""
    return task_step(task_name(basename, env_name)).remove_products(ctx, env_name)


def tree_drift(tree: Path, manifest: Path) -> list[str]:
    """How a folder differs from its recorded manifest by stat data (cheap), or why it can't be checked."""
    if not tree.is_dir():
        return [f"missing: {tree}"]
    data = hashing.read_stamp(manifest)
    if data is None:
        return ["missing: its manifest"]
    try:
        return hashing.manifest_stat_drift(data, tree, limit=5, skip=hashing.skip_bytecode)
    except (ValueError, TypeError, IndexError):
        return ["unreadable: its manifest"]


def unchanged(metadata: Path, outputs: dict[str, Any]) -> bool:
    """Whether a small metadata file a step wrote is still there with the bytes it wrote."""
    recorded = outputs.get("metadata_hash")
    if recorded is None:  # a stamp from before metadata hashes were recorded
        return metadata.is_file()
    return hashing.hash_file_or_none(metadata) == recorded


def runnable_apps(ctx: RunContext, layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    """The applications among `layers` that are built on this machine."""
    from stacks.spec import LayerKind

    return [
        layer for layer in layers if layer.kind is LayerKind.APPLICATION and builds_here(ctx, layer)
    ]


def _selected_tasks(ctx: RunContext, names: list[str]) -> list[str]:
    """The task names of the layers this run is about (all without `--include`)."""
    if ctx.selected is None:
        return names
    return [name for name in names if name.partition(":")[2] in ctx.selected]


def stamps_of_every_destination(current: Path) -> list[Path]:
    """`current` (a stamp in `<step>/<destination key>/`) and its siblings in other destinations."""
    keys = current.parent.parent
    found = sorted(key / current.name for key in keys.glob("*") if (key / current.name).is_file())
    legacy = keys / current.name  # from before stamps were kept per destination
    found += [legacy] if legacy.is_file() else []
    return found if current in found else [current, *found]


def remove_empty_parents(paths: list[Path]) -> None:
    """Remove each path's folder once it is empty (a destination's stamp folder)."""
    for path in paths:
        with suppress(OSError):
            path.parent.rmdir()
