"""Broken launch modules fail the build (syntax) or warn (imports), with a real small stack."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from projects import no_traceback, write_project
from stackrun import run_python, stacks

# A runtime without packages and an app straight on it: no index needed, quick to build.
TINY = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[applications]]
name = "app"
launch_module = "launch/app.py"
support_modules = ["helpers"]
runtime = "cpython-3.12"
requirements = []
"""


@pytest.mark.slow
def test_syntax_errors_fail_the_build_and_missing_imports_warn(tmp_path: Path) -> None:
    spec = write_project(
        tmp_path / "project",
        TINY,
        {
            "launch/app.py": "import helpers\nprint(helpers.GREETING)\n",
            "helpers/__init__.py": "GREETING = 'hi'\n",
            "helpers/broken.py": "def f(:\n    pass\n",
        },
    )
    failed = stacks("build", spec, check=False, cwd=spec.parent)
    assert failed.code == 1, failed.stderr
    assert "helpers/broken.py, line 1: syntax error: " in failed.stderr
    assert "FAILED build:app-app" in failed.stderr
    assert not (spec.parent / "cache" / "build" / "app-app").exists()
    no_traceback(failed)

    (spec.parent / "helpers" / "broken.py").write_text("def f():\n    pass\n")
    (spec.parent / "launch" / "app.py").write_text(
        textwrap.dedent(
            """\
            import sys
            import helpers
            import requests_not_in_this_stack

            print(helpers.GREETING)
            """
        )
    )
    built = stacks("build", spec, cwd=spec.parent)
    assert (
        "warning: layer 'app-app': launch/app.py, line 3: imports requests_not_in_this_stack,"
        " but no module 'requests_not_in_this_stack' is in this layer or the layers below it"
    ) in built.stderr
    assert built.stderr.count("warning:") == 1  # sys (stdlib) and helpers (support) resolve
    # A warning, not an error: the build is kept and exported; only running the app fails.
    exported = stacks("export", spec, cwd=spec.parent)
    assert "warning:" not in exported.stderr  # nothing rebuilt, nothing warned again
    ran = run_python(spec.parent / "_export" / "app-app" / "bin" / "python", "-m", "app")
    assert ran.returncode != 0 and "requests_not_in_this_stack" in ran.stderr
    no_traceback(built, exported)
