"""Scale-out over a CI matrix: the plan (one lock job, then shards) and each shard's record.

A shard is one platform and a set of layers no other shard's build is needed for: the
connected components of the build graph (a layer and the layers below it) among the layers
that target that platform, merged down to a maximum count. Every shard builds from the same
committed locks (made once by the lock job) and records which ones in its shard record, so
`stacks merge` can refuse shards that did not.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.errors import StacksError, UsageError
from stacks.platforms import PLATFORMS
from stacks.publish.merge import SHARD_FORMAT, SHARD_RECORD, stack_entry
from stacks.spec import LayerSpec, StackSpec

if TYPE_CHECKING:
    from stacks.pipeline.run_context import RunContext

# The hosted runner of each platform (GitHub Actions labels).
GITHUB_RUNNERS = {
    "linux_x86_64": "ubuntu-latest",
    "linux_aarch64": "ubuntu-24.04-arm",
    "macosx_arm64": "macos-14",
    "macosx_x86_64": "macos-13",
    "win_amd64": "windows-latest",
    "win_arm64": "windows-11-arm",
}
# GitLab.com hosted runner tags; GitLab hosts no Intel macOS or Windows arm64 runners, so
# those two are tags a self-hosted runner has to carry.
GITLAB_TAGS = {
    "linux_x86_64": "saas-linux-small-amd64",
    "linux_aarch64": "saas-linux-small-arm64",
    "macosx_arm64": "saas-macos-medium-m1",
    "macosx_x86_64": "stacks-macosx_x86_64",
    "win_amd64": "saas-windows-medium-amd64",
    "win_arm64": "stacks-win_arm64",
}
LOCK_PLATFORM = "linux_x86_64"  # locks are cross-platform: any runner makes them
RELEASE_DIR = "release"
DEFAULT_ARCHIVE_FORMAT = "tar.xz"  # `stacks publish`'s default


@dataclass(frozen=True)
class Shard:
    """One matrix entry: the layers one runner of `platform` builds and publishes."""

    id: str
    platform: str
    layers: tuple[str, ...]  # env names, in the spec's order
    archive_format: str = DEFAULT_ARCHIVE_FORMAT

    @property
    def output_dir(self) -> str:
        """The folder (in the project folder) the shard publishes into."""
        return f"shard-{self.id}"

    def command(self, spec_name: str) -> list[str]:
        """The stacks command of the shard, run in the project folder once the locks are there."""
        included = [word for name in self.layers for word in ("--include", literal_pattern(name))]
        formats = (
            []
            if self.archive_format == DEFAULT_ARCHIVE_FORMAT
            else ["--format", self.archive_format]
        )
        return [
            "stacks",
            "publish",
            spec_name,
            *included,
            "--output-dir",
            self.output_dir,
            *formats,
            "--tag-outputs",
            "--shard-record",
        ]

    def to_json(self, spec_name: str) -> dict[str, Any]:
        """The shard's matrix entry."""
        command = self.command(spec_name)
        return {
            "id": self.id,
            "platform": self.platform,
            "runner": GITHUB_RUNNERS[self.platform],
            "gitlab_tag": GITLAB_TAGS[self.platform],
            "layers": list(self.layers),
            "output_dir": self.output_dir,
            "command": command,
            "command_line": shlex.join(command),
        }


def literal_pattern(name: str) -> str:
    """An `--include` pattern matching exactly `name` (layer names may hold `*`, `?`, `[`)."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def independent_trees(spec: StackSpec, platform: str) -> list[list[str]]:
    """The connected components of the build graph among the layers targeting `platform`."""
    layers = [layer for layer in spec.layers if platform in layer.platforms]
    parent = {layer.env_name: layer.env_name for layer in layers}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for layer in layers:
        for below in layer.dependencies:
            if below in parent:
                parent[root(layer.env_name)] = root(below)
    groups: dict[str, list[str]] = {}
    for layer in layers:  # spec order, within and across the groups
        groups.setdefault(root(layer.env_name), []).append(layer.env_name)
    return list(groups.values())


def plan_shards(
    spec: StackSpec, max_shards: int | None = None, archive_format: str = DEFAULT_ARCHIVE_FORMAT
) -> list[Shard]:
    """The shards of a stack: platform x independent tree, merged down to `max_shards`; each
    publishes `archive_format` archives."""
    order = {layer.env_name: index for index, layer in enumerate(spec.layers)}
    per_platform = {
        platform: trees for platform in PLATFORMS if (trees := independent_trees(spec, platform))
    }
    if not per_platform:
        raise UsageError(
            f"{spec.name}: no layer targets any platform, so there is nothing to build",
            hint="give the layers `platforms` (or leave them out for all six)",
        )
    if max_shards is not None and max_shards < len(per_platform):
        raise UsageError(
            f"--max-shards {max_shards}: {spec.name} targets {len(per_platform)} platforms "
            f"({', '.join(per_platform)}), and a shard builds for one platform",
            hint=f"pass --max-shards {len(per_platform)} or more",
        )
    total = sum(len(trees) for trees in per_platform.values())
    while max_shards is not None and total > max_shards:
        # Merge the two smallest trees of the platform with the most shards.
        platform = max(per_platform, key=lambda name: len(per_platform[name]))
        trees = sorted(per_platform[platform], key=len)
        merged = sorted(trees[0] + trees[1], key=order.__getitem__)
        rest = [merged, *trees[2:]]
        per_platform[platform] = sorted(rest, key=lambda tree: order[tree[0]])
        total -= 1
    return [
        Shard(f"{platform}-{number}", platform, tuple(tree), archive_format)
        for platform, trees in per_platform.items()
        for number, tree in enumerate(trees, start=1)
    ]


def matrix_plan(
    spec: StackSpec, max_shards: int | None = None, archive_format: str = DEFAULT_ARCHIVE_FORMAT
) -> dict[str, Any]:
    """The whole plan as JSON: the lock job, the shards and the merge job."""
    name = spec.name
    shards = plan_shards(spec, max_shards, archive_format)
    folders = [shard.output_dir for shard in shards]
    lock = ["stacks", "lock", name]
    merge = ["stacks", "merge", RELEASE_DIR, *folders]
    verify = ["stacks", "verify", "--release", RELEASE_DIR]
    return {
        "spec": name,
        "lock": {
            "platform": LOCK_PLATFORM,
            "runner": GITHUB_RUNNERS[LOCK_PLATFORM],
            "command": lock,
            "command_line": shlex.join(lock),
            "outputs": ["requirements/"],
        },
        "shards": [shard.to_json(name) for shard in shards],
        "merge": {
            "command": merge,
            "command_line": shlex.join(merge),
            "verify": verify,
            "verify_line": shlex.join(verify),
        },
    }


# ---------------------------------------------------------------- the shard record


def check_shard_run(ctx: RunContext, layers: list[LayerSpec]) -> None:
    """Before a shard runs: names tagged by platform, and every lock valid (a shard never locks)."""
    from stacks.lock.locking import lock_state

    if not ctx.tag_outputs:
        raise UsageError(
            "--shard-record needs --tag-outputs: a release of several platforms names every "
            "archive and metadata file by its platform",
            hint="run the command `stacks ci matrix` plans for the shard",
        )

    names = {layer.env_name for layer in layers}
    names.update(below for layer in layers for below in layer.dependencies)
    unlocked = [
        layer.env_name
        for layer in ctx.spec.layers
        if layer.env_name in names and not lock_state(ctx.spec, layer, ctx.lock_options).valid
    ]
    if unlocked:
        raise StacksError(
            f"--shard-record: no valid lock for {', '.join(unlocked)}; a shard builds from the "
            "locks the lock job made and never locks itself",
            hint=f"run `stacks lock {ctx.spec.name}` once and hand requirements/ to every shard",
        )


def shard_record(ctx: RunContext, layers: list[LayerSpec]) -> dict[str, Any]:
    """What a shard built: its platform, its layers, the lock hashes of the whole stack."""
    from stacks.lock.metadata import read_lock_meta

    locks = {}
    for layer in ctx.spec.layers:
        meta = read_lock_meta(ctx.spec, layer)
        locks[layer.env_name] = meta.lock_hash if meta is not None else None
    return {
        "shard_format": SHARD_FORMAT,
        "spec": ctx.spec.name,
        "platform": ctx.platform_tag,
        "layers": [layer.env_name for layer in layers],
        "locks": locks,
        "stack": [
            stack_entry(layer.env_name, layer.kind.value, layer.platforms)
            for layer in ctx.spec.layers
        ],
    }


def write_shard_record(ctx: RunContext, layers: list[LayerSpec]) -> Path:
    """Write `__stacks__/shard.json` into the publish folder (after its layers are published)."""
    from stacks import atomic

    assert ctx.output_dir is not None
    path = ctx.output_dir / "__stacks__" / SHARD_RECORD
    atomic.write_json(path, shard_record(ctx, layers))
    return path
