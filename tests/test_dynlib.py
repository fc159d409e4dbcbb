"""Shared libraries across layers: a framework ships libgreet.so, an app's C extension links to it."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import textwrap
from pathlib import Path

import pytest
from stackrun import run_python, stacks
from wheels import build_wheel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler"),
]

PY312 = Path("/root/.pyenv/versions/3.12.1")
LIB_SOURCE = "int greet_answer(void) { return 42; }\n"
EXT_SOURCE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
int greet_answer(void);
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(greet_answer()); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "the answer"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "greetext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_greetext(void) { return PyModule_Create(&module); }
"""

SPEC = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "rt"
python_implementation = "cpython@3.12"
platforms = ["linux_x86_64"]
requirements = []

[[frameworks]]
name = "greet"
runtime = "rt"
requirements = ["greetlib"]
{fw_extra}

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["greet"]
requirements = ["greetext"]
"""


def _include_dir() -> Path:
    candidate = PY312 / "include" / "python3.12"
    return (
        candidate if (candidate / "Python.h").is_file() else Path(sysconfig.get_paths()["include"])
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """greetlib (a package holding libgreet.so) and greetext (an extension linking -lgreet, no rpath)."""
    work = tmp_path_factory.mktemp("cbuild")
    (work / "greet.c").write_text(LIB_SOURCE)
    (work / "greetext.c").write_text(EXT_SOURCE)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", work / "libgreet.so", work / "greet.c"], check=True
    )
    ext = work / "greetext.cpython-312-x86_64-linux-gnu.so"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            f"-I{_include_dir()}",
            "-o",
            ext,
            work / "greetext.c",
            f"-L{work}",
            "-lgreet",
        ],
        check=True,
    )
    out = work / "wheels"
    lib = (work / "libgreet.so").read_bytes()
    build_wheel(
        out,
        "greetlib",
        "1.0",
        files={"greetlib/__init__.py": "", "greetlib/libgreet.so": lib},
        tag="py3-none-linux_x86_64",
    )
    build_wheel(
        out,
        "greetlib-copy",
        "1.0",
        files={"greetlib_copy/__init__.py": "", "greetlib_copy/libgreet.so": lib},
        tag="py3-none-linux_x86_64",
    )
    build_wheel(
        out,
        "greetext",
        "1.0",
        files={ext.name: ext.read_bytes()},
        requires=["greetlib"],
        tag="cp312-cp312-linux_x86_64",
    )
    return out


def _project(folder: Path, fw_extra: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("import greetext\nprint('answer', greetext.answer())\n")
    spec = folder / "stack.toml"
    spec.write_text(textwrap.dedent(SPEC.format(fw_extra=fw_extra)))
    return spec


def test_app_extension_finds_framework_library_through_the_launcher(
    tmp_path: Path, wheels: Path
) -> None:
    spec = _project(tmp_path / "ok")
    stacks("build", spec, "--no-index", "--local-wheels", wheels)
    build = spec.parent / "cache" / "build"
    link = build / "framework-greet" / "share" / "venv" / "dynlib" / "libgreet.so"
    assert link.is_symlink() and link.resolve().name == "libgreet.so"
    assert not Path(link.readlink()).is_absolute()
    out = stacks("run", spec, "app")
    assert out.stdout.strip() == "answer 42"
    # Without the launcher (the runtime's python with the same sys.path) the library is not found.
    sites = [
        str(build / layer / "lib" / "python3.12" / "site-packages")
        for layer in ("app-app", "framework-greet")
    ]
    bare = run_python(
        build / "rt" / "bin" / "python3",
        "-c",
        f"import sys; sys.path[:0] = {sites!r}; import greetext",
    )
    assert bare.returncode != 0 and "libgreet.so" in bare.stderr


def test_dynlib_exclude_star_turns_linking_off(tmp_path: Path, wheels: Path) -> None:
    spec = _project(tmp_path / "off", 'dynlib_exclude = ["*"]')
    stacks("build", spec, "--no-index", "--local-wheels", wheels)
    assert not (
        spec.parent / "cache" / "build" / "framework-greet" / "share" / "venv" / "dynlib"
    ).exists()
    out = stacks("run", spec, "app", check=False)
    assert out.code != 0 and "libgreet.so" in out.stderr


def test_ambiguous_library_names_fail_with_the_dynlib_exclude_fix(
    tmp_path: Path, wheels: Path
) -> None:
    spec = _project(tmp_path / "clash")
    spec.write_text(
        spec.read_text().replace(
            'requirements = ["greetlib"]', 'requirements = ["greetlib", "greetlib-copy"]'
        )
    )
    out = stacks("build", spec, "--no-index", "--local-wheels", wheels, "--json", check=False)
    assert out.code == 1
    failure = next(t for t in out.data["tasks"] if t["task"] == "build:framework-greet")
    assert failure["status"] == "failed"
    assert "libgreet.so" in failure["error"] and "dynlib_exclude" in failure["error"]
    # The fix the message suggests works.
    spec.write_text(
        spec.read_text().replace(
            'runtime = "rt"', 'runtime = "rt"\ndynlib_exclude = ["greetlib_copy/libgreet.so"]', 1
        )
    )
    stacks("build", spec, "--no-index", "--local-wheels", wheels)
    assert stacks("run", spec, "app").stdout.strip() == "answer 42"


def test_a_failed_build_leaves_nothing_of_the_install_started_above_it(
    tmp_path: Path, wheels: Path
) -> None:
    """Locked first, the chain builds with early installs (-n 2): while the framework's build
    fails (two libraries of one name), uv is already installing the app into its staging
    folder, which must go with the failed run."""
    spec = _project(tmp_path / "clash")
    spec.write_text(
        spec.read_text().replace(
            'requirements = ["greetlib"]', 'requirements = ["greetlib", "greetlib-copy"]'
        )
    )
    stacks("lock", spec, "--no-index", "--local-wheels", wheels)
    out = stacks("build", spec, "-n", "2", "--json", check=False)
    assert out.code == 1
    statuses = {t["task"]: t["status"] for t in out.data["tasks"]}
    assert statuses["build:framework-greet"] == "failed"
    assert statuses["build:app-app"] == "not-run"
    build = spec.parent / "cache" / "build"
    assert sorted(p.name for p in build.iterdir()) == ["rt"]  # no app, no staging folder
