"""Byte-stable `unchecked-hash` bytecode (PEP 552) for a layer's archive (`publish --bytecode`).

The layer's own runtime interpreter compiles every archived `lib/**.py` into a scratch
folder outside the build tree. The bytes depend only on the sources and the interpreter:
hash-based pycs hold no mtime, the names baked into code objects are the layer-relative
paths (the import system replaces them with the real path on load), `PYTHONHASHSEED=0`
fixes the order of constant sets, and each fixed, sorted batch of files is compiled in a
fresh process, so marshal's reference flags cannot depend on what ran before.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stacks.children import run_child
from stacks.errors import PublishError

BATCH = 400  # files per compiling process: fixed, so batches (and bytes) never depend on cores

# Runs in the layer's runtime interpreter (any CPython 3.8+): stdin is a JSON list of
# [source path, pyc path, name baked into the code]; syntax errors are skipped (deploy's
# compile skips them too).
_COMPILE = """\
import json, py_compile, sys
for source, pyc, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(source, cfile=pyc, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        pass
"""

_CACHE_TAG = "import sys; print(sys.implementation.cache_tag)"


def cache_tag(python: Path) -> str:
    """The interpreter's bytecode cache tag (e.g. `cpython-312`)."""
    try:
        done = run_child([str(python), "-S", "-s", "-c", _CACHE_TAG], text=True, env=_compile_env())
        problem = f"exit {done.returncode}: {done.stderr.strip()}" if done.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        raise PublishError(
            f"cannot run the layer's runtime interpreter {python} to compile bytecode: {problem}",
            hint="build the layer's runtime again (`stacks build SPEC`)",
        )
    return done.stdout.strip()


def pyc_name(rel: str, tag: str) -> str:
    """Where the pyc of the layer-relative source `rel` goes (`.../__pycache__/m.<tag>.pyc`)."""
    folder, _, name = rel.rpartition("/")
    stem = name[: -len(".py")]
    return f"{folder}/__pycache__/{stem}.{tag}.pyc" if folder else f"__pycache__/{stem}.{tag}.pyc"


def compile_sources(
    python: Path, tree: Path, sources: list[str], install_target: str, scratch: Path, tag: str
) -> dict[str, Path]:
    """Compile the layer-relative `sources` of `tree`; return {archived pyc name: file}."""
    jobs = [
        [str(tree / rel), str(scratch / pyc_name(rel, tag)), f"{install_target}/{rel}"]
        for rel in sorted(sources)
    ]
    batches = [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]
    from stacks.children import interrupts_deferred

    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8))) as pool:
        with interrupts_deferred():  # map starts the pool's threads: never interrupted inside
            results = pool.map(lambda b: _run_batch(python, b, scratch), batches)
        failures = [f for f in results if f]
    if failures:
        raise PublishError(
            f"compiling the bytecode of {tree} with {python} failed: {failures[0]}",
            hint="publish without --bytecode, or fix the layer's runtime",
        )
    produced = {}
    for rel in sources:
        name = pyc_name(rel, tag)
        if (scratch / name).is_file():  # not there: a syntax error (deploy skips it too)
            produced[name] = scratch / name
    return produced


def _run_batch(python: Path, batch: list[list[str]], scratch: Path) -> str:
    """Compile one batch in a fresh process; the error text ('' when it worked)."""
    done = run_child(
        [str(python), "-S", "-s", "-X", "utf8", "-c", _COMPILE],
        input=json.dumps(batch).encode(),
        env=_compile_env(),
        cwd=scratch,
    )
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


def _compile_env() -> dict[str, str]:
    """No PYTHON* setting of the caller's; a fixed hash seed (the order of constant sets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    return env
