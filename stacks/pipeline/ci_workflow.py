"""CI files for the matrix plan: a GitHub Actions workflow, and a GitLab child pipeline.

The workflow does not hold the plan: its lock job runs `stacks ci matrix` and hands the
shards to the matrix job as a job output (`fromJSON`), so it stays right when the spec
changes. Paths inside it are relative to the repository root, commands run in the project
folder (the spec's folder).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

from stacks.pipeline.shards import DEFAULT_ARCHIVE_FORMAT, RELEASE_DIR, matrix_plan
from stacks.spec import StackSpec

LOCKS_ARTIFACT = "stacks-locks"
SHARD_ARTIFACT = "stacks-shard-"
RELEASE_ARTIFACT = "stacks-release"
TOOL_PYTHON = "3.12"  # the Python stacks itself runs on in CI

GITHUB_TEMPLATE = """\
# Build and publish {spec} on every platform it targets (written by `stacks ci workflow`).
# lock: lock once (locks are cross-platform) and plan the shards (`stacks ci matrix`);
# shard: one runner per platform x independent layer tree, building from those locks;
# merge: one release folder with every archive and one stack manifest per platform.
name: stacks

on:
  push:
    branches: [main]
  pull_request:
  workflow_dispatch:

permissions:
  contents: read

env:
  STACKS_INSTALL: "{install}"

defaults:
  run:
    shell: bash
    working-directory: {project}

jobs:
  lock:
    runs-on: ubuntu-latest
    outputs:
      matrix: ${{{{ steps.plan.outputs.matrix }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: |
{pythons}
      - run: python -m pip install "$STACKS_INSTALL"
      - run: stacks lock {spec}
      - id: plan
        run: |
          matrix=$(stacks ci matrix {spec} --format github{max_shards}{archive_format})
          echo "matrix=$matrix" >> "$GITHUB_OUTPUT"
      - uses: actions/upload-artifact@v4
        with:
          name: {locks_artifact}
          path: {locks_path}
          if-no-files-found: error

  shard:
    needs: lock
    name: shard ${{{{ matrix.id }}}}
    runs-on: ${{{{ matrix.runner }}}}
    strategy:
      fail-fast: false
      matrix: ${{{{ fromJSON(needs.lock.outputs.matrix) }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: |
{pythons}
      - run: python -m pip install "$STACKS_INSTALL"
      - uses: actions/download-artifact@v4
        with:
          name: {locks_artifact}
          path: {locks_path}
      - run: ${{{{ matrix.command_line }}}}
      - uses: actions/upload-artifact@v4
        with:
          name: {shard_artifact}${{{{ matrix.id }}}}
          path: {shard_path}
          if-no-files-found: error

  merge:
    needs: [lock, shard]
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "{tool_python}"
      - run: python -m pip install "$STACKS_INSTALL"
      - uses: actions/download-artifact@v4
        with:
          pattern: {shard_artifact}*
          path: {shards_path}
      - run: stacks merge {release} shards/* --spec {spec}
      - run: stacks verify --release {release}
      - uses: actions/upload-artifact@v4
        with:
          name: {release_artifact}
          path: {release_path}
          if-no-files-found: error
"""


def runtime_pythons(spec: StackSpec | None) -> list[str]:
    """The Pythons the runners install: each runtime's version (for `local` runtimes), then stacks'."""
    found: list[str] = []
    if spec is not None:
        for layer in spec.layers:
            if layer.runtime == layer.env_name and layer.python_version not in found:
                found.append(layer.python_version)
    # setup-python makes the last one the default `python`: the one stacks runs on.
    return [version for version in found if version != TOOL_PYTHON] + [TOOL_PYTHON]


def github_workflow(
    spec_name: str,
    project: str,
    *,
    pythons: Sequence[str],
    install: str,
    max_shards: int | None = None,
    archive_format: str = DEFAULT_ARCHIVE_FORMAT,
) -> str:
    """The GitHub Actions workflow text; `project` is the spec's folder from the repository root."""
    project = posixpath.normpath(project or ".")

    def path(rel: str) -> str:
        # JSON strings are YAML double-quoted scalars: any folder name is safe.
        return json.dumps(posixpath.normpath(posixpath.join(project, rel)))

    return GITHUB_TEMPLATE.format(
        spec=spec_name,
        project=json.dumps(project),
        install=install,
        pythons="\n".join(f"            {version}" for version in pythons),
        max_shards=f" --max-shards {max_shards}" if max_shards else "",
        archive_format=(
            ""
            if archive_format == DEFAULT_ARCHIVE_FORMAT
            else f" --archive-format {archive_format}"
        ),
        locks_artifact=LOCKS_ARTIFACT,
        locks_path=path("requirements"),
        shard_artifact=SHARD_ARTIFACT,
        shard_path=path("${{ matrix.output_dir }}"),
        shards_path=path("shards"),
        release=RELEASE_DIR,
        release_path=path(RELEASE_DIR),
        release_artifact=RELEASE_ARTIFACT,
        tool_python=TOOL_PYTHON,
    )


def gitlab_child_pipeline(
    spec: StackSpec, max_shards: int | None = None, archive_format: str = DEFAULT_ARCHIVE_FORMAT
) -> str:
    """A GitLab child pipeline (YAML): one job per shard, then the merge job.

    The parent pipeline's `stacks-lock` job writes it as an artifact and triggers it; each job
    fetches the locks from that job (`needs: pipeline: $PARENT_PIPELINE_ID`).
    """
    import yaml

    plan = matrix_plan(spec, max_shards, archive_format)
    project = "${STACKS_PROJECT_DIR}"
    locks = {"pipeline": "$PARENT_PIPELINE_ID", "job": "stacks-lock"}
    jobs: dict[str, Any] = {}
    for shard in plan["shards"]:
        jobs[f"shard-{shard['id']}"] = {
            "stage": "shards",
            "tags": [shard["gitlab_tag"]],
            "needs": [dict(locks)],
            "script": [f'cd "{project}"', shard["command_line"]],
            "artifacts": {"paths": [f"{project}/{shard['output_dir']}/"]},
        }
    folders = " ".join(shard["output_dir"] for shard in plan["shards"])
    jobs["stacks-merge"] = {
        "stage": "merge",
        "needs": [{"job": name, "artifacts": True} for name in jobs],
        "script": [
            f'cd "{project}"',
            f"stacks merge {RELEASE_DIR} {folders} --spec {plan['spec']}",
            f"stacks verify --release {RELEASE_DIR}",
        ],
        "artifacts": {"paths": [f"{project}/{RELEASE_DIR}/"]},
    }
    document = {
        "stages": ["shards", "merge"],
        "variables": {"STACKS_PROJECT_DIR": "."},
        "default": {"before_script": ['python3 -m pip install "${STACKS_INSTALL:-stacks}"']},
        **jobs,
    }
    text: str = yaml.safe_dump(document, sort_keys=False, width=1000)
    return "# GitLab child pipeline written by `stacks ci matrix --format gitlab`\n" + text
