"""Verify what stacks made against what it recorded, by full content hash.

Each step's `verify` (see `stacks.pipeline.steps.verify_stack`) checks, for every layer: the committed lock against its metadata,
a runtime layer's provided runtime (`<cache>/runtimes/<env>`), the build folder and the
export folder against the tree manifests the runtime, build and export steps recorded
(`<cache>/stamps/<step>/[<key>/]<env>.manifest.json`, xxh3 of every file), and the archives
against the sha256 in their stamps and publish metadata, in every destination recorded.

`verify_deployed` checks a deployment folder (`stacks.deploy.deploy.layer_problems`): every
layer the deployment record lists or that has a deploy marker or layer metadata is compared
with `.stacks-content.json`, the sha256 of every entry that deploy unpacked from an archive
whose own sha256 it had checked against the publish metadata first; what deploy generates
(a layered env's `bin/`, `pyvenv.cfg`, `sitecustomize.py`) must be exactly what the layer's
metadata makes, and its lower layers must resolve inside the deployment. Missing layers,
layers without a marker and staging folders of an interrupted deploy are reported too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

from stacks import hashing
from stacks.spec import LayerSpec, StackSpec

LIMIT = 50  # differences listed per item


@dataclass
class Finding:
    """The verdict on one thing: a layer's lock, runtime, build, archive, export or deployed folder."""

    layer: str
    item: str  # "lock", "runtime", "build", "archive", "export" or "deployed"
    path: str
    status: str  # "ok", "differs" or "absent" (never made: not a difference)
    differences: list[str] = field(default_factory=list)
    fix: str | None = None
    notes: list[str] = field(default_factory=list)  # worth knowing, not a difference

    @property
    def failed(self) -> bool:
        """Whether this finding is a difference."""
        return self.status == "differs"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "layer": self.layer,
            "item": self.item,
            "path": self.path,
            "status": self.status,
            "differences": self.differences,
            "fix": self.fix,
            "notes": self.notes,
        }


# ---------------------------------------------------------------- a stack's own outputs
# Each step's `verify` (stacks.pipeline.steps) calls these on what it recorded.


def verify_lock(spec: StackSpec, layer: LayerSpec, spec_arg: str) -> Finding:
    """The committed lock file against the hash its metadata recorded."""
    from stacks.lock.metadata import (
        folders_in_the_way,
        lock_meta_problem,
        lock_paths,
        read_lock_meta,
    )

    paths = lock_paths(spec, layer)
    meta = read_lock_meta(spec, layer)
    found = Finding(layer.env_name, "lock", str(paths.pylock), "ok")
    in_the_way = folders_in_the_way(paths)
    if in_the_way:
        found.status = "differs"
        found.differences = [f"a folder, not a file: {path.name}" for path in in_the_way]
        removal = " ".join(quote(str(path)) for path in in_the_way)
        found.fix = (
            f"rm -r {removal} && stacks lock {quote(spec_arg)} --include {quote(layer.env_name)}"
        )
        return found
    if meta is None:
        problem = lock_meta_problem(spec, layer)
        if problem is None:
            found.status = "absent"
            return found
        # Garbage metadata is no lock at all for every step: say so (locking rewrites it).
        found.status, found.differences = "differs", [problem]
        found.fix = f"stacks lock {quote(spec_arg)} --include {quote(layer.env_name)}"
        return found
    if meta.written_by == "venvstacks":
        from stacks.lock.venvstacks_meta import content_hash_of

        # venvstacks hashes the packages in the file, not its bytes.
        content = content_hash_of(paths.pylock)
        actual = None if content is None else "venvstacks:" + content
    else:
        actual = hashing.hash_file_or_none(paths.pylock)
    if actual != meta.lock_hash:
        found.status = "differs"
        found.differences = [
            f"missing: {paths.pylock.name}"
            if actual is None
            else f"changed: {paths.pylock.name} (edited by hand: its hash is not the one in "
            f"{paths.meta.name})"
        ]
        found.fix = f"stacks lock {quote(spec_arg)} --include {quote(layer.env_name)}"
    return found


def verify_runtime(tree: Path, env_name: str, manifest: Path, spec_arg: str) -> Finding:
    """A provided runtime folder against its tree manifest."""
    # Provide it again, then rebuild the runtime layer, which links its files from it.
    fix = (
        f"stacks clean {quote(spec_arg)} runtime:{quote(env_name)} && "
        f"stacks build {quote(spec_arg)} --clean --include {quote(env_name)}"
    )
    return _verify_tree(env_name, "runtime", tree, manifest, fix)


def verify_build(tree: Path, env_name: str, manifest: Path, spec_arg: str) -> Finding:
    """A build folder against its tree manifest."""
    fix = f"stacks build {quote(spec_arg)} --clean --include {quote(env_name)}"
    return _verify_tree(env_name, "build", tree, manifest, fix)


def verify_export(
    env_name: str, folder: Path, stamp_path: Path, stamp: dict[str, Any], spec_arg: str
) -> Finding:
    """One recorded export of a layer against its tree manifest."""
    tree = folder / str(stamp.get("outputs", {}).get("install_target", env_name))
    fix = (
        f"rm -r {quote(str(tree))} && stacks export {quote(spec_arg)} "
        f"--output-dir {quote(str(folder))}"
    )
    return _verify_tree(env_name, "export", tree, stamp_path.with_suffix(".manifest.json"), fix)


def _verify_tree(env_name: str, item: str, tree: Path, manifest: Path, fix: str) -> Finding:
    found = Finding(env_name, item, str(tree), "ok", fix=None)
    data = hashing.read_stamp(manifest)
    if data is None:
        found.status = "absent" if not tree.exists() else "differs"
        if found.failed:
            found.differences = [f"missing: its manifest {manifest}"]
            found.fix = fix
        return found
    if not tree.is_dir():
        found.status, found.differences, found.fix = "differs", [f"missing: {tree}"], fix
        return found
    try:
        recorded = hashing.TreeManifest.from_json(data)
    except (ValueError, TypeError):
        found.status, found.differences, found.fix = "differs", [f"unreadable: {manifest}"], fix
        return found
    drift = recorded.content_drift(tree, limit=LIMIT, skip=hashing.skip_bytecode)
    if drift:
        found.status, found.differences, found.fix = "differs", drift, fix
    return found


def verify_archive(
    env_name: str,
    folder: Path,
    stamp: dict[str, Any],
    spec_arg: str,
    tools_now: Callable[[str], dict[str, Any]] | None = None,
) -> Finding:
    """One recorded archive: its sha256 against the stamp and its published metadata.

    `tools_now(format)`: the tool versions a republish would use, compared with the
    `build_tools` its metadata recorded (a note for each that changed, never a difference).
    """
    outputs = stamp.get("outputs", {})
    archive = folder / str(outputs.get("archive_name", ""))
    metadata = folder / "__stacks__" / "env_metadata" / str(outputs.get("metadata_name", ""))
    found = Finding(env_name, "archive", str(archive), "ok")
    problems: list[str] = []
    try:
        sha256 = _sha256(archive)
        if sha256 != outputs.get("sha256"):
            problems.append(
                f"changed: {archive.name} (sha256 {sha256}, published {outputs.get('sha256')})"
            )
    except OSError:
        problems.append(f"missing: {archive.name}")
    try:
        published = json.loads(metadata.read_text(encoding="utf-8"))
        if published.get("archive_hashes", {}).get("sha256") != outputs.get("sha256"):
            problems.append(f"changed: {metadata.name} (its sha256 is not the archive's)")
        if tools_now is not None:
            found.notes = tool_changes(published.get("build_tools"), tools_now)
    except (OSError, ValueError, AttributeError):
        problems.append(f"missing or unreadable: __stacks__/env_metadata/{metadata.name}")
    if problems:
        found.status, found.differences = "differs", problems
        found.fix = (
            f"rm -f {quote(str(archive))} && stacks publish {quote(spec_arg)} "
            f"--output-dir {quote(str(folder))}{publish_options(env_name, stamp)}"
        )
    return found


def verify_stack_manifest(
    item: str, layer: str, path: Path, outputs: dict[str, Any], fix: str
) -> Finding:
    """A publish or export folder's stack manifest against the hash its stamp recorded."""
    found = Finding(layer, item, str(path), "ok")
    recorded = outputs.get("metadata_hash")
    actual = hashing.hash_file_or_none(path)
    if actual is None:
        found.differences = [f"missing: __stacks__/{path.name} (deploy reads it first)"]
    elif recorded is not None and actual != recorded:
        found.differences = [f"changed: __stacks__/{path.name}"]
    if found.differences:
        found.status, found.fix = "differs", fix
    return found


def tool_changes(recorded: Any, tools_now: Callable[[str], dict[str, Any]]) -> list[str]:
    """Which recorded `build_tools` versions differ from the current ones, in words."""
    if not isinstance(recorded, dict):
        return ["its metadata records no build_tools (published by an earlier stacks)"]
    compression = recorded.get("compression")
    fmt = compression.get("format") if isinstance(compression, dict) else None
    then, now = _flat(recorded), _flat(tools_now(str(fmt or "tar.xz")))
    changed = [
        f"{name} {_shown(then.get(name))} -> {_shown(now.get(name))}"
        for name in sorted(set(then) | set(now))
        if then.get(name) != now.get(name)
    ]
    if not changed:
        return []
    return [
        "built with other tools than a republish would use now (its bytes may differ): "
        + ", ".join(changed)
    ]


def _shown(value: Any) -> str:
    return "unrecorded" if value is None else str(value)


def _flat(tools: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tools.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key} "))
        else:
            flat[prefix + key] = value
    return flat


def publish_options(env_name: str, stamp: dict[str, Any]) -> str:
    """The publish options (besides the folder) that made a recorded archive: format, tags."""
    detail = stamp.get("input_detail", {}).get("archive") or [None, "tar.xz"]
    options = f" --format {quote(str(detail[1]))}" if detail[1] != "tar.xz" else ""
    tagged = stamp.get("outputs", {}).get("metadata_name") not in (None, f"{env_name}.json")
    bytecode = " --bytecode" if "bytecode" in detail[2:] else ""
    return options + (" --tag-outputs" if tagged else "") + bytecode


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_release(folder: Path) -> list[Finding]:
    """A publish or release folder on its own: each archive against its published metadata.

    Needs no spec and no cache (a merged release was made on no machine's cache).
    """
    from stacks.publish.merge import check_release

    if not folder.is_dir():
        from stacks.errors import UsageError

        raise UsageError(f"{folder}: no such folder", hint="give a `stacks merge` output folder")
    findings = []
    for layer, path, problems in check_release(folder):
        found = Finding(layer, "archive", path, "differs" if problems else "ok", problems)
        if problems:
            found.fix = "merge the shard folders again (`stacks merge OUTPUT SHARD_DIR...`)"
        findings.append(found)
    return findings


def verify_published(env_name: str, folder: Path) -> list[Finding]:
    """A layer's archives in a folder no stamp records (a merged release), against its metadata."""
    if not any((folder / "__stacks__").glob("stack*.json")):
        return []
    return [item for item in verify_release(folder) if item.layer == env_name]


# ---------------------------------------------------------------- a deployment folder


def verify_deployed(target: Path) -> list[Finding]:
    """Check every layer of the deployment in `target`: missing, partial, tampered, unconfigured, foreign."""
    from stacks.deploy.deploy import LAYER_CONFIG, MARKER, RECORD, layer_problems, read_record

    if not target.is_dir():
        from stacks.errors import UsageError

        raise UsageError(f"{target}: no such folder", hint="give the folder passed to --target")
    recorded = read_record(target)
    folders = {
        p.name: p
        for p in target.iterdir()
        if not p.name.startswith(".") and ((p / MARKER).is_file() or (p / LAYER_CONFIG).is_file())
    }
    if not folders and not recorded:
        from stacks.errors import UsageError

        raise UsageError(
            f"{target}: no deployed layers (no folder with a {MARKER})",
            hint="give the folder passed to `stacks deploy --target`",
        )
    findings = []
    for name in sorted(set(folders) | set(recorded)):
        layer = target / name
        found = Finding(name, "deployed", str(layer), "ok")
        if name not in folders:
            found.differences = [f"missing: {RECORD} lists it, but the folder is not there"]
        else:
            found.differences = layer_problems(layer)[:LIMIT]
        if found.differences:
            found.status = "differs"
            # deploy redoes a layer that does not match what it deployed
            found.fix = f"stacks deploy ARCHIVE_DIR --target {quote(str(target))} {quote(name)}"
        findings.append(found)
    for staging in sorted(p for p in target.iterdir() if p.name.endswith(".partial")):
        name = staging.name[1 : -len(".partial")].rsplit(".", 1)[0]
        findings.append(
            Finding(
                name,
                "deployed",
                str(staging),
                "differs",
                [f"partial: staging folder {staging.name} left by an interrupted deploy"],
                fix=f"stacks deploy ARCHIVE_DIR --target {quote(str(target))}",  # removes it
            )
        )
    return findings


def render(findings: list[Finding], *, quiet: bool = False) -> str:
    """Human-readable lines: one per checked item, then the differences and the fix.

    Quiet: only the items that differ (nothing when all match).
    """
    lines = []
    for item in findings:
        if item.status == "absent" or (quiet and not item.failed):
            continue
        label = "ok" if item.status == "ok" else "DIFFERS"
        lines.append(f"{label:8} {item.item:8} {item.layer}  {item.path}")
        for difference in item.differences:
            lines.append(f"           {difference}")
        if item.fix:
            lines.append(f"           fix: {item.fix}")
        if not quiet:
            lines.extend(f"           note: {note}" for note in item.notes)
    failed = sum(f.failed for f in findings)
    checked = sum(f.status != "absent" for f in findings)
    if len({f.fix for f in findings if f.failed and f.fix}) > 1:
        # A build edited in place is also the source of its archive and export.
        lines.append("run the fixes in the order shown (builds before what is made from them)")
    if quiet:
        pass
    elif not checked:
        lines.append("nothing to verify: no lock, build, archive or export is recorded yet")
    else:
        lines.append(
            f"{checked} checked, {failed} differ" if failed else f"{checked} checked, all match"
        )
    return "\n".join(lines)
