"""One release folder from the publish folders of many shards (`stacks merge`), and its check.

Each shard folder is what `stacks publish --tag-outputs --shard-record` wrote on one runner:
archives named `<deployed>-<platform>.<format>`, `__stacks__/env_metadata/<layer>-<platform>.json`,
`__stacks__/stack-<platform>.json` and the shard record `__stacks__/shard.json` (its platform,
its layers, the lock hash of every layer of the stack, and the stack's layers with their
target platforms). The release holds every archive and metadata file, and one stack
manifest per platform, exactly as one machine publishing everything with `--tag-outputs`
would write them; the shard records stay behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.errors import PublishError, UsageError
from stacks.publish.metadata import METADATA_DIR

SHARD_RECORD = "shard.json"
SHARD_FORMAT = 1
KIND_TABLES = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}


def stack_entry(env_name: str, kind: str, platforms: Sequence[str]) -> dict[str, Any]:
    """One layer of the stack as a shard record lists it (the spec's order is kept)."""
    return {"layer_name": env_name, "kind": kind, "platforms": list(platforms)}


def json_bytes(data: Any) -> bytes:
    """The bytes `atomic.write_json` writes (sorted keys, indent 2, a final newline)."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


@dataclass
class Published:
    """One layer's archive on one platform, as one shard published it."""

    shard: Path
    metadata_bytes: bytes
    metadata: dict[str, Any]
    archive: Path


@dataclass
class MergeResult:
    """What `merge_shards` did."""

    output: Path
    changed: bool
    archives: int
    platforms: list[str] = field(default_factory=list)


def read_record(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A shard folder's record, or the problem that stops it being read."""
    path = folder / METADATA_DIR / SHARD_RECORD
    if not folder.is_dir():
        return None, f"{folder}: no such folder"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, (
            f"{folder}: not a shard folder (no {METADATA_DIR}/{SHARD_RECORD}; publish shards "
            "with `stacks publish SPEC --tag-outputs --shard-record`, as `stacks ci matrix` plans)"
        )
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable shard record ({exc})"
    keys = ("platform", "layers", "locks", "stack")
    if not isinstance(record, dict) or record.get("shard_format") != SHARD_FORMAT:
        return None, f"{path}: not a shard record of format {SHARD_FORMAT}"
    if any(key not in record for key in keys):
        return None, f"{path}: incomplete shard record (it needs {', '.join(keys)})"
    return record, None


def merge_shards(
    output: Path, shard_dirs: Sequence[Path], *, stack: list[dict[str, Any]] | None = None
) -> MergeResult:
    """Merge shard folders into `output`, or raise PublishError listing every problem.

    `stack` (the spec's layers and platforms) decides which layers each platform must have;
    by default the shard records' own. Nothing is written unless every check passes, and the
    release replaces `output` in one rename; an identical release already there is kept.
    """
    problems: list[str] = []
    records: dict[Path, dict[str, Any]] = {}
    for folder in shard_dirs:
        record, problem = read_record(folder)
        if problem:
            problems.append(problem)
        elif record is not None:
            records[folder] = record
    problems += _disagreements(records, "locks", "were built from different locks")
    problems += _stack_disagreements(records)
    if stack is None and records:
        stack = next(iter(records.values()))["stack"]
    published, found = _published(records)
    problems += found
    problems += _conflicts(published)
    problems += _missing(stack or [], published)
    if problems:
        raise PublishError(
            f"stacks merge: {len(problems)} problem{'s' if len(problems) != 1 else ''}, nothing "
            "was written:\n  " + "\n  ".join(problems),
            hint="rebuild the shards named from one set of locks (`stacks ci matrix` plans it)",
        )
    content = _release_content(stack or [], published)
    if output.is_dir() and _same_release(output, content):
        return MergeResult(output, False, _count_archives(content), _platforms(published))
    _check_replaceable(output)
    with atomic.new_directory(output) as staging:
        for rel, source in content.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                _link_or_copy(source, target)
    return MergeResult(output, True, _count_archives(content), _platforms(published))


def _disagreements(records: Mapping[Path, dict[str, Any]], key: str, verb: str) -> list[str]:
    """Layers whose value under `key` (a mapping) differs between shards."""
    values: dict[str, dict[str, list[str]]] = {}
    for folder, record in records.items():
        table = record.get(key)
        if not isinstance(table, dict):
            continue
        for name, value in table.items():
            values.setdefault(name, {}).setdefault(str(value), []).append(folder.name)
    problems = []
    for name, seen in sorted(values.items()):
        if len(seen) > 1:
            listed = "; ".join(f"{value} in {', '.join(names)}" for value, names in seen.items())
            problems.append(f"shards {verb}: {name}: {listed}")
    return problems


def _stack_disagreements(records: Mapping[Path, dict[str, Any]]) -> list[str]:
    stacks: dict[str, list[str]] = {}
    for folder, record in records.items():
        stacks.setdefault(json.dumps(record["stack"], sort_keys=True), []).append(folder.name)
    if len(stacks) <= 1:
        return []
    groups = "; ".join(", ".join(names) for names in stacks.values())
    return [f"shards were published from different specs (layers or platforms differ): {groups}"]


def _published(
    records: Mapping[Path, dict[str, Any]],
) -> tuple[dict[tuple[str, str], list[Published]], list[str]]:
    """(layer, platform) -> what each shard published of it; and the problems found."""
    published: dict[tuple[str, str], list[Published]] = {}
    problems = []
    for folder, record in records.items():
        platform = str(record["platform"])
        for layer in record["layers"]:
            path = folder / METADATA_DIR / "env_metadata" / f"{layer}-{platform}.json"
            try:
                raw = path.read_bytes()
                metadata = json.loads(raw)
                name = metadata["archive_name"]
                size, sha256 = metadata["archive_size"], metadata["archive_hashes"]["sha256"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append(
                    f"{folder.name}: {layer} ({platform}): no readable metadata ({exc})"
                )
                continue
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                problems.append(f"{folder.name}: {layer}: bad archive_name {name!r} in {path.name}")
                continue
            archive = folder / name
            actual = _size_and_sha256(archive)
            if actual is None:
                problems.append(f"{folder.name}: {layer} ({platform}): archive {name} is missing")
                continue
            if actual != (size, sha256):
                problems.append(
                    f"{folder.name}: {layer} ({platform}): archive {name} is damaged "
                    f"({actual[0]} bytes, sha256 {actual[1]}; its metadata says {size}, {sha256})"
                )
                continue
            published.setdefault((layer, platform), []).append(
                Published(folder, raw, metadata, archive)
            )
    return published, problems


def _conflicts(published: Mapping[tuple[str, str], list[Published]]) -> list[str]:
    """Two shards that published one layer for one platform differently."""
    problems = []
    for (layer, platform), copies in sorted(published.items()):
        if len({copy.metadata_bytes for copy in copies}) > 1:
            listed = "; ".join(
                f"{copy.shard.name}: {copy.metadata['archive_name']} sha256 "
                f"{copy.metadata['archive_hashes']['sha256']}"
                for copy in copies
            )
            problems.append(f"shards disagree on {layer} ({platform}): {listed}")
    return problems


def _missing(
    stack: Sequence[Mapping[str, Any]], published: Mapping[tuple[str, str], list[Published]]
) -> list[str]:
    """Layers of the stack that no shard published for a platform they target; strays."""
    problems = []
    wanted = set()
    for entry in stack:
        for platform in entry["platforms"]:
            wanted.add((entry["layer_name"], platform))
            if (entry["layer_name"], platform) not in published:
                problems.append(
                    f"{entry['layer_name']} targets {platform}, but no shard published it there"
                )
    for layer, platform in sorted(set(published) - wanted):
        problems.append(f"{layer} ({platform}) was published but the stack does not target it")
    return problems


def _release_content(
    stack: Sequence[Mapping[str, Any]], published: Mapping[tuple[str, str], list[Published]]
) -> dict[str, Path | bytes]:
    """Every file of the release by relative path: archives (their shard copy) and metadata."""
    content: dict[str, Path | bytes] = {}
    for platform in _platforms(published):
        tables: dict[str, list[Any]] = {table: [] for table in KIND_TABLES.values()}
        for entry in stack:  # the spec's order, as `archive:__stack__` writes it
            copies = published.get((entry["layer_name"], platform))
            if not copies:
                continue
            first = copies[0]
            tables[KIND_TABLES[entry["kind"]]].append(first.metadata)
            name = f"{entry['layer_name']}-{platform}.json"
            content[f"{METADATA_DIR}/env_metadata/{name}"] = first.metadata_bytes
            content[first.metadata["archive_name"]] = first.archive
        content[f"{METADATA_DIR}/stack-{platform}.json"] = json_bytes({"layers": tables})
    return content


def _platforms(published: Mapping[tuple[str, str], list[Published]]) -> list[str]:
    return sorted({platform for _, platform in published})


def _count_archives(content: Mapping[str, Path | bytes]) -> int:
    return sum(not isinstance(source, bytes) for source in content.values())


def _same_release(output: Path, content: Mapping[str, Path | bytes]) -> bool:
    """Whether `output` already holds exactly this release (merging again is a no-op)."""
    present = {
        path.relative_to(output).as_posix()
        for path in output.rglob("*")
        if path.is_file() or path.is_symlink()
    }
    if present != set(content):
        return False
    for rel, source in content.items():
        target = output / rel
        if isinstance(source, bytes):
            if target.read_bytes() != source:
                return False
        elif _size_and_sha256(target) != _size_and_sha256(source):
            return False
    return True


def _check_replaceable(output: Path) -> None:
    """Refuse to replace a folder that is not a release (a typo must not remove a project)."""
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir():
        raise UsageError(f"stacks merge: {output} is not a folder", hint="name a release folder")
    if any(output.iterdir()) and not (output / METADATA_DIR).is_dir():
        raise UsageError(
            f"stacks merge: {output} is not empty and not a release folder (no {METADATA_DIR}/); "
            "nothing was written",
            hint="name a new folder, or one an earlier `stacks merge` wrote",
        )


def _link_or_copy(source: Path, target: Path) -> None:
    # Archives are never changed in place (always replaced by a rename), so a link is safe.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _size_and_sha256(path: Path) -> tuple[int, str] | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = 0
            while block := handle.read(1 << 20):
                size += len(block)
                digest.update(block)
    except OSError:
        return None
    return size, digest.hexdigest()


# ---------------------------------------------------------------- checking a release


def check_release(folder: Path) -> list[tuple[str, str, list[str]]]:
    """Every archive of a publish folder against its metadata: (layer, path, problems) each.

    Needs no cache and no stamps: the stack manifests (`__stacks__/stack*.json`) name the
    layers, each layer's metadata file must match its manifest entry, and each archive its
    metadata's size and sha256.
    """
    manifests = sorted((folder / METADATA_DIR).glob("stack*.json"))
    if not manifests:
        raise UsageError(
            f"{folder}: no stack manifest ({METADATA_DIR}/stack*.json)",
            hint="give a folder `stacks publish` or `stacks merge` wrote",
        )
    results = []
    for manifest in manifests:
        suffix = manifest.stem.removeprefix("stack")  # "" or "-<platform>"
        try:
            tables = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
            entries = [entry for table in KIND_TABLES.values() for entry in tables[table]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            results.append((manifest.name, str(manifest), [f"unreadable: {exc}"]))
            continue
        for entry in entries:
            results.append(_check_layer(folder, manifest.name, suffix, entry))
    return results


def _check_layer(
    folder: Path, manifest: str, suffix: str, entry: Mapping[str, Any]
) -> tuple[str, str, list[str]]:
    layer = str(entry.get("layer_name"))
    name = str(entry.get("archive_name"))
    archive = folder / name
    problems = []
    metadata = folder / METADATA_DIR / "env_metadata" / f"{layer}{suffix}.json"
    try:
        if json.loads(metadata.read_text(encoding="utf-8")) != entry:
            problems.append(f"changed: {metadata.name} (not the entry in {manifest})")
    except (OSError, ValueError):
        problems.append(f"missing or unreadable: {METADATA_DIR}/env_metadata/{metadata.name}")
    if Path(name).name != name:
        problems.append(f"bad archive_name {name!r} in {manifest}")
        return layer, str(archive), problems
    actual = _size_and_sha256(archive)
    expected = (entry.get("archive_size"), (entry.get("archive_hashes") or {}).get("sha256"))
    if actual is None:
        problems.append(f"missing: {name}")
    elif actual != expected:
        problems.append(
            f"changed: {name} ({actual[0]} bytes, sha256 {actual[1]}; published "
            f"{expected[0]} bytes, sha256 {expected[1]})"
        )
    return layer, str(archive), problems
