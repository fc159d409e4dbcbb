"""Pylock post-processing, wheel coverage and writing, on hand-made exports (no uv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.lock import pylock as pl
from stacks.lock.metadata import LockOptions, effective_exclude_newer, lock_time_of
from stacks.lock.uv_project import project_name, uv_environment
from stacks.platforms import PLATFORMS, target_platform, wheel_python_supports, wheel_supports
from stacks.spec import load_spec
from stacks.tomlwriter import dumps

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

WIN = "sys_platform == 'win32'"
ALL = PLATFORMS


def scope(platforms: tuple[str, ...] = ALL, python: str = "3.12") -> pl.PlatformScope:
    return pl.PlatformScope(platforms, python)


def export(text: str) -> pl.Pylock:
    return pl.parse_pylock('lock-version = "1.0"\ncreated-by = "uv"\n' + text)


def process(exported: pl.Pylock, tmp_path: Path, **kwargs: object) -> pl.Pylock:
    options: dict = {
        "scope": scope(),
        "lower": [],
        "source_dir": tmp_path / "work",
        "pylock_dir": tmp_path / "requirements" / "layer",
    }
    options.update(kwargs)
    return pl.layer_pylock(exported, **options)  # type: ignore[arg-type]


def by_name(lock: pl.Pylock) -> dict[str, list[pl.Package]]:
    found: dict[str, list[pl.Package]] = {}
    for package in lock.packages:
        found.setdefault(package.name, []).append(package)
    return found


# ---------------------------------------------------------------- constraints


def test_constraints_first_unconditional_pin_shadows_later_layers() -> None:
    pins = [
        pl.LowerPin("runtime", "colorama", "0.4.5", WIN),
        pl.LowerPin("runtime", "six", "1.16.0", None),
        pl.LowerPin("framework-a", "six", "1.17.0", None),
        pl.LowerPin("framework-a", "colorama", "0.4.6", None),
        pl.LowerPin("framework-b", "colorama", "0.4.4", None),
        pl.LowerPin("framework-b", "colorama", "0.4.5", WIN),
    ]
    assert pl.constraints(pins) == [
        f"colorama==0.4.5 ; {WIN}",
        "colorama==0.4.6",
        "six==1.16.0",
    ]


def test_lower_pins_skip_packages_the_lower_layer_only_shares() -> None:
    lock = export(
        f"""
[[packages]]
name = "six"
version = "1.16.0"
marker = "{pl.SHARED_MARKER}"

[[packages]]
name = "idna"
version = "3.7"
"""
    )
    assert pl.lower_pins(lock, "framework-a") == [pl.LowerPin("framework-a", "idna", "3.7", None)]


# ---------------------------------------------------------------- markers


def test_scope_evaluates_markers_per_platform() -> None:
    assert scope().applies(None) == (frozenset(ALL), True)
    assert scope().applies(WIN) == (frozenset({"win_amd64", "win_arm64"}), True)
    assert scope().applies("platform_machine == 'arm64'") == (frozenset({"macosx_arm64"}), True)
    assert scope().applies("python_version < '3.12'") == (frozenset(), True)


def test_scope_is_inexact_where_the_synthetic_environment_cannot_decide() -> None:
    applies, exact = scope().applies("python_full_version >= '3.12.4'")
    assert applies == frozenset(ALL) and not exact
    assert scope(python="3.12.1").applies("python_full_version >= '3.12.4'") == (frozenset(), True)
    assert scope().applies("platform_release >= '20'") == (frozenset(ALL), False)


# ---------------------------------------------------------------- post-processing

EXPORT = """
[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
index = "https://pypi.org/simple"
sdist = { url = "https://example.invalid/colorama-0.4.6.tar.gz" }
wheels = [{ url = "https://example.invalid/colorama-0.4.6-py2.py3-none-any.whl", upload-time = 2022-10-25T02:36:20Z, size = 25335, hashes = { sha256 = "aa" } }]

[[packages]]
name = "pypy-only"
version = "1.0"
marker = "implementation_name == 'pypy'"
wheels = [{ url = "https://example.invalid/pypy_only-1.0-py3-none-any.whl" }]

[[packages]]
name = "everywhere"
version = "2.0"
marker = "sys_platform == 'linux' or sys_platform == 'darwin' or sys_platform == 'win32'"
index = "file:///somewhere/flat"
wheels = [{ url = "file:///somewhere/flat/everywhere-2.0-py3-none-any.whl", hashes = { sha256 = "bb" } }]

[[packages]]
name = "six"
version = "1.16.0"
wheels = [{ url = "https://example.invalid/six-1.16.0-py2.py3-none-any.whl" }]
"""


def test_post_processing_drops_inapplicable_packages_and_always_true_markers(
    tmp_path: Path,
) -> None:
    result = by_name(process(export(EXPORT), tmp_path))
    assert "pypy-only" not in result
    assert result["everywhere"][0].marker is None
    assert result["colorama"][0].marker == WIN
    assert "sdist" not in result["colorama"][0].extra


def test_post_processing_makes_local_wheels_relative_and_drops_local_indexes(
    tmp_path: Path,
) -> None:
    exported = export(EXPORT.replace("/somewhere", (tmp_path / "wheels").as_posix()))
    result = by_name(process(exported, tmp_path))
    wheel = result["everywhere"][0].wheels[0]
    assert wheel.url is None
    assert wheel.path == "../../wheels/flat/everywhere-2.0-py3-none-any.whl"
    assert result["everywhere"][0].index is None
    assert result["colorama"][0].index == "https://pypi.org/simple"


def test_post_processing_marks_lower_layer_packages_shared(tmp_path: Path) -> None:
    lower = [pl.LowerPin("cpython-3.12", "six", "1.16.0", None)]
    result = by_name(process(export(EXPORT), tmp_path, lower=lower))
    (six,) = result["six"]
    assert six.shared and six.shared_from == "cpython-3.12"
    assert six.marker == pl.SHARED_MARKER
    assert six.wheels == () and six.index is None


def test_a_different_version_in_a_lower_layer_is_not_shared(tmp_path: Path) -> None:
    lower = [pl.LowerPin("cpython-3.12", "six", "1.17.0", None)]
    (six,) = by_name(process(export(EXPORT), tmp_path, lower=lower))["six"]
    assert not six.shared and six.wheels


def test_a_package_shared_on_some_platforms_is_split(tmp_path: Path) -> None:
    lower = [pl.LowerPin("cpython-3.12", "six", "1.16.0", WIN)]
    entries = by_name(process(export(EXPORT), tmp_path, lower=lower))["six"]
    shared = [p for p in entries if p.shared]
    own = [p for p in entries if not p.shared]
    assert len(shared) == 1 and len(own) == 1
    assert scope().applies(own[0].marker)[0] == frozenset(ALL) - {"win_amd64", "win_arm64"}
    assert scope().applies(shared[0].own_marker)[0] == frozenset({"win_amd64", "win_arm64"})
    assert shared[0].marker.endswith(f"and {pl.SHARED_MARKER}")


def test_render_is_deterministic_and_parses_back(tmp_path: Path) -> None:
    lower = [pl.LowerPin("cpython-3.12", "six", "1.16.0", None)]
    result = process(export(EXPORT), tmp_path, lower=lower)
    data = pl.render_pylock(result, "framework-web")
    text = data.decode("utf-8")
    assert text.startswith("# Locked requirements for framework-web (DO NOT EDIT")
    assert "upload-time" not in text and "sdist" not in text and "\r" not in text
    assert pl.parse_pylock(text).packages == result.packages
    assert pl.render_pylock(pl.parse_pylock(text), "framework-web") == data
    assert tomllib.loads(text)["packages"][-1]["tool"] == {
        "stacks": {"shared-from": "cpython-3.12"}
    }


def test_summary_lists_own_then_shared_packages(tmp_path: Path) -> None:
    lower = [pl.LowerPin("cpython-3.12", "six", "1.16.0", None)]
    result = process(export(EXPORT), tmp_path, lower=lower)
    summary = pl.render_summary(result, "framework-web", "pylock.framework-web.toml")
    own, shared = summary.split("# Shared packages provided by lower layers\n")
    assert f"colorama==0.4.6 ; {WIN}" in own and "everywhere==2.0\n" in own
    assert shared == "six==1.16.0  # from cpython-3.12\n"


# ---------------------------------------------------------------- wheel coverage


def wheels_lock(*names: str, marker: str | None = None) -> pl.Pylock:
    wheels = tuple(pl.Wheel(name=n) for n in names)
    return pl.Pylock(packages=(pl.Package("native", "1.0", marker=marker, wheels=wheels),))


def test_missing_wheels_respects_platform_markers_and_targets() -> None:
    lock = wheels_lock("native-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    (missing,) = pl.missing_wheels(lock, scope(), linux_target=(2, 28), macosx_target=(13, 0))
    assert missing.platforms == tuple(p for p in ALL if p != "linux_x86_64")
    linux_only = wheels_lock(
        "native-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", marker="sys_platform == 'linux'"
    )
    (missing,) = pl.missing_wheels(linux_only, scope(), linux_target=(2, 28), macosx_target=(13, 0))
    assert missing.platforms == ("linux_aarch64",)


def test_missing_wheels_respects_the_macos_target() -> None:
    lock = wheels_lock("native-1.0-cp312-cp312-macosx_14_0_universal2.whl")
    macos = scope(("macosx_arm64", "macosx_x86_64"))
    (missing,) = pl.missing_wheels(lock, macos, linux_target=(2, 28), macosx_target=(13, 0))
    assert missing.platforms == ("macosx_arm64", "macosx_x86_64")
    assert not pl.missing_wheels(lock, macos, linux_target=(2, 28), macosx_target=(14, 0))


def test_missing_wheels_checks_the_python_version() -> None:
    lock = wheels_lock("native-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert pl.missing_wheels(
        lock, scope(("linux_x86_64",)), linux_target=(2, 28), macosx_target=(13, 0)
    )


def test_coverage_hint_suggests_platforms_or_a_newer_glibc() -> None:
    lock = wheels_lock(
        "native-1.0-cp312-cp312-manylinux_2_34_x86_64.whl", "native-1.0-cp312-cp312-win_amd64.whl"
    )
    missing = pl.missing_wheels(lock, scope(), linux_target=(2, 28), macosx_target=(13, 0))
    message, hint = pl.describe_missing("app-x", missing, ALL)
    assert "native 1.0: no wheel for linux_x86_64, linux_aarch64" in message
    assert 'platforms = ["win_amd64"]' in hint
    linux = scope(("linux_x86_64",))
    missing = pl.missing_wheels(lock, linux, linux_target=(2, 28), macosx_target=(13, 0))
    message, hint = pl.describe_missing("app-x", missing, ("linux_x86_64",))
    assert "no target platform has wheels" in hint and "glibc@2.34" in hint


@pytest.mark.parametrize(
    ("wheel", "python", "ok"),
    [
        ("a-1-py3-none-any.whl", "3.12", True),
        ("a-1-py2.py3-none-any.whl", "3.12", True),
        ("a-1-py311-none-any.whl", "3.12", True),
        ("a-1-py313-none-any.whl", "3.12", False),
        ("a-1-cp312-cp312-win_amd64.whl", "3.12", True),
        ("a-1-cp311-cp311-win_amd64.whl", "3.12", False),
        ("a-1-cp39-abi3-win_amd64.whl", "3.12", True),
        ("a-1-cp313-abi3-win_amd64.whl", "3.12", False),
        ("a-1-cp313-cp313t-win_amd64.whl", "3.13", False),
        ("a-1-pp310-pypy310_pp73-win_amd64.whl", "3.10", False),
    ],
)
def test_wheel_python_supports(wheel: str, python: str, ok: bool) -> None:
    assert wheel_python_supports(wheel, python) is ok


def test_wheel_supports_checks_python_only_when_asked() -> None:
    linux = target_platform("linux_x86_64")
    wheel = "a-1-cp311-cp311-manylinux2014_x86_64.whl"
    assert wheel_supports(wheel, linux)
    assert not wheel_supports(wheel, linux, python="3.12")


# ---------------------------------------------------------------- small helpers


def test_toml_writer_round_trips_nested_documents() -> None:
    document = {
        "title": 'quote " and \\ and ünïcode',
        "flag": True,
        "number": 3,
        "empty": [],
        "table": {"inline": {"a": 1}, "list": ["x", "y"], "sub": {"deep": "z"}},
        "items": [{"name": "one", "tool": {"stacks": {"k": "v"}}}, {"name": "two"}],
        "wheels": [{"name": "w", "hashes": {"sha256": "00"}}],
    }
    text = dumps(document, inline_arrays={"wheels"})
    assert tomllib.loads(text) == document
    assert "[items.tool]\n" not in text  # no empty headers for tables of tables


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-08-27", "2025-08-27T00:00:00+00:00"),
        ("2025-08-27T12:30:00Z", "2025-08-27T12:30:00+00:00"),
        ("2025-08-27T12:30:00.5+02:00", "2025-08-27T10:30:00+00:00"),
        ("1 week", None),
        (None, None),
    ],
)
def test_lock_time_of_normalises_exclude_newer(value: str | None, expected: str | None) -> None:
    assert lock_time_of(value) == expected


def test_exclude_newer_precedence(write_spec) -> None:
    spec = load_spec(write_spec('[tool.uv]\nexclude-newer = "2024-01-01"\n'))
    assert effective_exclude_newer(spec, LockOptions(), {}) == "2024-01-01"
    assert effective_exclude_newer(spec, LockOptions(), {"UV_EXCLUDE_NEWER": "2023-01-01"}) == (
        "2023-01-01"
    )
    options = LockOptions(exclude_newer="2022-01-01")
    assert effective_exclude_newer(spec, options, {"UV_EXCLUDE_NEWER": "2023-01-01"}) == (
        "2022-01-01"
    )


def test_uv_environment_drops_settings_that_change_locks() -> None:
    environ = {
        "PATH": "/bin",
        "UV_INDEX_URL": "https://elsewhere.invalid/simple",
        "UV_EXCLUDE_NEWER": "2020-01-01",
        "UV_CACHE_DIR": "/cache",
        "UV_INDEX_PRIVATE_PASSWORD": "secret",
        "VIRTUAL_ENV": "/venv",
    }
    assert uv_environment(environ) == {
        "PATH": "/bin",
        "UV_CACHE_DIR": "/cache",
        "UV_INDEX_PRIVATE_PASSWORD": "secret",
    }


def test_project_name_is_valid() -> None:
    assert project_name("cpython-3.12") == "cpython-3.12"
    assert project_name("app-demo@x") == "app-demo-x"
