"""The build smoke check's script, run by a real interpreter against its own sys.path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.build.smoke import _SMOKE, top_level_imports


def smoke(
    packages: list[list[str]],
    *,
    paths: list[str] | None = None,
    launch: str | None = None,
    first: Path | None = None,
    modules: list[list[str]] | None = None,
    launch_files: list[list[Any]] | None = None,
) -> Any:
    """Run the smoke script with this Python (`first` put at the front of sys.path); return its report."""
    code = _SMOKE if first is None else f"import sys; sys.path.insert(0, {str(first)!r})\n{_SMOKE}"
    argument = repr([paths or [], packages, launch, modules or [], launch_files or []])
    done = subprocess.run(
        [sys.executable, "-c", code, argument], capture_output=True, text=True, check=True
    )
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def dist_info(folder: Path, name: str, version: str) -> None:
    """A minimal installed distribution's metadata folder."""
    meta = folder / f"{name}-{version}.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")


def test_installed_packages_pass() -> None:
    assert smoke([["pytest", pytest.__version__]])["problems"] == []


def test_names_match_in_any_spelling(tmp_path: Path) -> None:
    dist_info(tmp_path, "my_dotted.pkg", "1.0")
    report = smoke([["My-Dotted_Pkg", "1.0"], ["my.dotted.pkg", "1.0"]], first=tmp_path)
    assert report["problems"] == []


def test_a_missing_package_is_reported() -> None:
    report = smoke([["no-such-distribution", "1.0"]])
    assert report["problems"] == [
        "package no-such-distribution 1.0 is not importable (no metadata found)"
    ]


def test_a_wrong_version_is_reported_with_the_installed_one() -> None:
    report = smoke([["pytest", "0.0.1"]])
    assert report["problems"] == [f"package pytest: expected 0.0.1, found {pytest.__version__}"]


def test_the_first_distribution_on_sys_path_wins(tmp_path: Path) -> None:
    dist_info(tmp_path, "pytest", "0.0.2")
    assert smoke([["pytest", "0.0.2"]], first=tmp_path)["problems"] == []


def test_a_version_spelled_differently_is_read_from_metadata(tmp_path: Path) -> None:
    dist_info(tmp_path, "oddpkg", "1.0")
    meta = tmp_path / "oddpkg-1.0.dist-info"
    meta.rename(tmp_path / "oddpkg-1.0.0.dist-info")
    assert smoke([["oddpkg", "1.0"]], first=tmp_path)["problems"] == []


def test_sys_path_order_and_launch_module_are_checked(tmp_path: Path) -> None:
    report = smoke([], paths=[str(tmp_path)], launch="no_such_module_here")
    assert report["problems"] == [
        f"missing from sys.path: {tmp_path}",
        "launch module no_such_module_here cannot be imported",
    ]
    assert smoke([], paths=[sys.path[-1], sys.path[1]])["problems"][0].startswith(
        "sys.path order is wrong"
    )


def test_launch_module_names_python_m_accepts(tmp_path: Path) -> None:
    """A hyphenated launch module resolves; a dotted one is a reported problem, not a crash."""
    (tmp_path / "my-app.py").write_text("")
    assert smoke([], launch="my-app", first=tmp_path)["problems"] == []
    report = smoke([], launch="no_such_package.app", first=tmp_path)
    assert report["problems"] == [
        "launch module no_such_package.app (No module named 'no_such_package') cannot be imported"
    ]


def test_a_syntax_error_in_a_module_names_the_source_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("import os\n")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n\ndef broken(:\n    pass\n")
    report = smoke(
        [],
        modules=[[str(good), "launch/good.py"], [str(bad), "launch/bad.py"]],
        launch="good",
        first=tmp_path,
    )
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith("launch/bad.py, line 3: syntax error: ")
    assert report["warnings"] == []  # imports are checked only once everything compiles


@pytest.mark.parametrize("parsed_here", [True, False], ids=["parsed-by-stacks", "parsed-by-layer"])
def test_unresolved_top_level_imports_of_the_launch_module_are_warnings(
    tmp_path: Path, parsed_here: bool
) -> None:
    launch = tmp_path / "launch_me.py"
    launch.write_text(
        "from __future__ import annotations\n"
        "import os, json\n"
        "import no_such_package_here.sub\n"
        "from pytest import fixture\n"
        "from . import sibling\n"  # relative: resolved by the package, not checked here
        "from also_missing import thing\n"
        "def later():\n"
        "    import not_checked_inside_functions\n"
    )
    report = smoke(
        [],
        launch="launch_me",
        first=tmp_path,
        modules=[[str(launch), "launch_me.py"]],
        # stacks parses the imports itself unless its Python cannot (None: the layer's does).
        launch_files=[
            [str(launch), "launch_me.py", top_level_imports(launch) if parsed_here else None]
        ],
    )
    assert report["problems"] == []
    assert report["warnings"] == [
        "launch_me.py, line 3: imports no_such_package_here.sub, but no module"
        " 'no_such_package_here' is in this layer or the layers below it",
        "launch_me.py, line 6: imports also_missing, but no module 'also_missing' is in this"
        " layer or the layers below it",
    ]


def test_a_launch_module_this_python_cannot_parse_is_left_to_the_layer(tmp_path: Path) -> None:
    source = tmp_path / "newer.py"
    source.write_text("import os\ndef f(:\n")
    assert top_level_imports(source) is None
    good = tmp_path / "good.py"
    good.write_text("import os.path, sys\nfrom json import loads\nfrom . import x\n")
    assert top_level_imports(good) == [(1, "os.path"), (1, "sys"), (2, "json")]


def test_expected_packages_follow_markers_and_load_packaging_only_for_them(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "pylock.plain.toml"
    plain.write_text(
        'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.17.0"\n', encoding="utf-8"
    )
    marked = tmp_path / "pylock.marked.toml"
    marked.write_text(
        'lock-version = "1.0"\n'
        '[[packages]]\nname = "colorama"\nversion = "0.4.6"\nmarker = "sys_platform == \'win32\'"\n'
        '[[packages]]\nname = "idna"\nversion = "3.10"\n'
        "marker = \"sys_platform == 'linux' and python_full_version >= '3.9'\"\n",
        encoding="utf-8",
    )
    code = (
        "import sys; from pathlib import Path; from stacks.build.smoke import expected_packages\n"
        "paths = [Path(p) for p in sys.argv[2:]]\n"
        "print(expected_packages(paths, sys.argv[1], '3.12.4'), 'packaging.markers' in sys.modules)"
    )

    def run(platform: str, *pylocks: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, platform, *map(str, pylocks)],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert run("linux_x86_64", plain) == "[('six', '1.17.0')] False"
    assert run("linux_x86_64", plain, marked) == "[('idna', '3.10'), ('six', '1.17.0')] True"
    assert run("win_amd64", marked) == "[('colorama', '0.4.6')] True"


def test_messages_name_the_build_folder_not_its_staging_folder(tmp_path: Path) -> None:
    """The check runs in the staging folder beside the build folder; users know the latter."""
    from stacks.build.smoke import _as_built

    target = tmp_path / "build" / "app-x"
    stage = tmp_path / "build" / ".app-x.0a1b2c3d.partial"
    text = f"missing from sys.path: {stage}/lib/python3.12/site-packages"
    assert (
        _as_built(text, stage, target)
        == f"missing from sys.path: {target}/lib/python3.12/site-packages"
    )
    assert _as_built(text, target, target) == text
