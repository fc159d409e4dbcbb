"""archive:<env>: a byte-reproducible archive of a built layer and its metadata (`stacks publish`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import (
    RunContext,
    archive_name,
    metadata_name,
    task_name,
)
from stacks.pipeline.steps.base import (
    StackManifestStep,
    register,
    task_failure,
    unchanged,
)
from stacks.pipeline.steps.build import BUILD, build_uv_version
from stacks.pipeline.steps.publish import (
    PublishStep,
    epoch,
    manifest_current,
    plain_name,
    run_manifest,
)
from stacks.spec import LayerKind, LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding


# ---------------------------------------------------------------- archive:<env>


def archive_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of archive:<env>: same build and metadata, archive still there."""
    stamp = ARCHIVE.matching_stamp(ctx, env_name, ARCHIVE.inputs(ctx, env_name))
    if stamp is None or ctx.output_dir is None:
        return False
    outputs = stamp.get("outputs", {})
    archive = ctx.output_dir / outputs.get("archive_name", "")
    metadata = ctx.output_dir / "__stacks__" / "env_metadata" / outputs.get("metadata_name", "")
    try:
        return archive.stat().st_size == outputs.get("archive_size") and unchanged(
            metadata, outputs
        )
    except OSError:
        return False


def run_archive(ctx: RunContext, env_name: str) -> Any:
    """Action of archive:<env>: write the reproducible archive and its metadata."""
    from stacks import atomic
    from stacks.publish.archives import write_archive

    assert ctx.output_dir is not None
    key = ARCHIVE.inputs(ctx, env_name)
    if key is None:
        return task_failure(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    name = archive_name(ctx, env_name)
    meta_name = metadata_name(ctx, env_name, tagged=ctx.tag_outputs)
    meta_path = ctx.output_dir / "__stacks__" / "env_metadata" / meta_name
    progress = ctx.progress(task_name(ARCHIVE.name, env_name), "archive")
    try:
        result = write_archive(
            ctx.build_dir(env_name),
            ctx.output_dir / name,
            root_name=metadata["install_target"],
            fmt=ctx.archive_format,
            mtime=epoch(metadata["locked_at"]),
            layered=layer.kind is not LayerKind.RUNTIME,
            progress=progress,
            bytecode_python=ctx.build_dir(layer.runtime) / "bin" / "python"
            if ctx.bytecode
            else None,
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    finally:
        progress.close()
    build_number = _archive_build(
        hashing.read_stamp(meta_path) or {}, metadata["lock_version"], name, result.sha256
    )
    metadata.update(
        {
            "archive_build": build_number,
            "archive_name": name,
            "target_platform": ctx.platform_tag,
            "archive_size": result.size,
            "archive_hashes": {"sha256": result.sha256},
            "build_tools": build_tools(ctx.archive_format, build_uv_version(ctx, env_name)),
        }
    )
    if ctx.bytecode:  # deploy reads it: the pycs in the archive need no compiling
        metadata["bytecode"] = "unchecked-hash"
    atomic.write_json(meta_path, metadata)
    outputs = {
        "metadata_hash": hashing.hash_file_or_none(meta_path),
        "archive_name": name,
        "archive_size": result.size,
        "sha256": result.sha256,
        "metadata_name": meta_name,
        "output_dir": str(ctx.output_dir),
        "lock_version": metadata["lock_version"],
        "archive_build": build_number,
    }
    ARCHIVE.write_stamp(ctx, env_name, key, outputs)
    return None


def build_tools(fmt: str, uv: str | None) -> dict[str, Any]:
    """The versions of what decides an archive's bytes: stacks, the uv that installed the
    build, the Python writing the archive (tarfile, zipfile) and the compression library."""
    import platform

    from stacks import __version__
    from stacks.publish.archives import compression_tools

    return {
        "stacks": __version__,
        "uv": uv,
        "python": platform.python_version(),
        "compression": compression_tools(fmt),
    }


def _archive_build(previous: dict[str, Any], lock_version: Any, name: str, sha256: str) -> int:
    """The archive's build number, from the metadata already in the output folder.

    1 for a new lock version; the same number when the archive came out byte-identical;
    one more when the same lock gave other bytes. The output folder, not the cache, decides,
    so two project copies publishing into fresh folders write identical metadata.
    """
    try:
        before = int(previous["archive_build"])
    except (KeyError, TypeError, ValueError):
        return 1
    if previous.get("lock_version") != lock_version or before < 1:
        return 1
    same = (
        previous.get("archive_name") == name
        and (previous.get("archive_hashes") or {}).get("sha256") == sha256
    )
    return before if same else before + 1


class ArchiveStep(PublishStep):
    """Write a reproducible archive of every built layer, with its metadata (`stacks publish`)."""

    name = "archive"
    doc = "Write a reproducible archive of every built layer (stacks publish)."
    verb = "publish"
    folder_option = "output_dir"
    default_folder = "_artifacts"
    never_done = "never published to this folder with these settings (no stamp)"
    action = staticmethod(run_archive)
    check = staticmethod(archive_current)

    def needs(self, ctx: RunContext, layer: LayerSpec) -> list[str]:
        """Its build."""
        return [task_name(BUILD.name, layer.env_name)]

    def destination_detail(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The archive's name and format."""
        detail = [archive_name(ctx, env_name), ctx.archive_format]
        return {"archive": detail + (["bytecode"] if ctx.bytecode else [])}

    def settings(self, ctx: RunContext) -> list[Any]:
        """The archive format, whether names carry the platform and whether pycs are shipped."""
        # `--bytecode` only when given: stamps of archives without it stay valid.
        return [ctx.archive_format, ctx.tag_outputs] + (["bytecode"] if ctx.bytecode else [])

    def tagged(self, ctx: RunContext) -> bool:
        """`--tag-outputs`."""
        return ctx.tag_outputs

    def outputs_of(self, ctx: RunContext, env_name: str, outputs: dict[str, Any]) -> list[Path]:
        """The archive and its metadata file."""
        if not isinstance(outputs.get("output_dir"), str):
            return []
        folder = Path(outputs["output_dir"])
        products = []
        if plain_name(outputs.get("archive_name")):
            products.append(folder / outputs["archive_name"])
        if plain_name(outputs.get("metadata_name")):
            products.append(folder / "__stacks__" / "env_metadata" / outputs["metadata_name"])
        return products

    def expected_outputs(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The archive and metadata names this run would write."""
        if ctx.output_dir is None:
            return {}
        return {
            "output_dir": str(ctx.output_dir),
            "archive_name": archive_name(ctx, env_name),
            "metadata_name": metadata_name(ctx, env_name, tagged=ctx.tag_outputs),
        }

    def rewrite_command(
        self, spec_arg: str, folder: Path, layer_stamp: tuple[str, dict[str, Any]] | None
    ) -> str:
        """`stacks publish` into the folder, with the format and tag options it was made with."""
        from stacks.pipeline.verify import publish_options

        command = super().rewrite_command(spec_arg, folder, layer_stamp)
        return command + (publish_options(*layer_stamp) if layer_stamp else "")

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """Each recorded archive against the sha256 in its stamp and its published metadata."""
        from stacks.build.install import uv_version
        from stacks.pipeline.verify import Finding, verify_archive, verify_published

        def tools_now(fmt: str) -> dict[str, Any]:  # what a rebuild and republish would use
            return build_tools(fmt, uv_version())

        findings = [
            verify_archive(layer.env_name, folder, stamp, spec_arg, tools_now)
            for folder, _, stamp in self.recorded_destinations(ctx, layer.env_name)
        ]
        if not findings and ctx.output_dir is not None:
            # Published elsewhere (a `stacks merge` release): its own metadata is the record.
            findings = verify_published(layer.env_name, ctx.output_dir)
        return findings or [Finding(layer.env_name, self.name, "", "absent")]

    def next_steps(self, ctx: RunContext, layers: Sequence[LayerSpec]) -> list[str]:
        """Where the archives are."""
        return [f"archives and metadata in {ctx.output_dir}"] if ctx.output_dir else []


ARCHIVE = register(ArchiveStep())
ARCHIVE.manifest = StackManifestStep(ARCHIVE, run_manifest, manifest_current)
