"""Property tests: whatever a spec file holds, `stacks show` exits 0 or 2, never crashes."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import math
import string
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mro import mro_orders
from tomlwriter import dumps

from stacks.cli.commands import main
from stacks.platforms import PLATFORMS
from stacks.spec import LayerKind, load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LAYER_NAMES = [
    "r",
    "r2",
    "cpython-3.12",
    "f",
    "g",
    "h",
    "a",
    "x@1",
    "",
    " r",
    "../up",
    "framework-f",
]
# Names Windows cannot give a folder (the runtimes generated below target Windows too).
WINDOWS_DEVICES = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)),
}
INDEX_NAMES = ["cpu", "cu128", "Cpu", "nope", ""]
REQUIREMENTS = [
    "attrs",
    "attrs>=23.1",
    "name<>",
    "numpy; sys_platform == 'linux'",
    "",
    "pkg @ https://example.invalid/pkg-1.0-py3-none-any.whl",
    "Torch[extra]==2.*",
]
MODULES = [
    "launch/app.py",
    "launch/pkg",
    "launch/helper.py",
    "launch/other/app.py",
    "launch/bad-name.py",
    "launch/notes.txt",
    "launch/nomain",
    "missing.py",
    "launch",
    "",
    "/",
    "x" * 300,
    "a\x00b",
]


@functools.cache
def junk(*, toml: bool) -> st.SearchStrategy[Any]:
    """Any nested value the document format can hold."""
    scalars = (
        st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats()
        | st.text(max_size=12)
        | st.dates()
        | st.datetimes(timezones=st.just(dt.timezone.utc))
    )
    keys: st.SearchStrategy[Any] = st.text(max_size=6)
    if not toml:
        any_char = st.characters(exclude_categories=())  # lone surrogates too
        scalars = scalars | st.none() | st.lists(any_char, max_size=4).map("".join)
        keys = keys | st.integers(-3, 3) | st.booleans() | st.none()
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=6,
    )


def either(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes anything."""
    return st.one_of(good, good, good, bad)


@functools.cache
def field_values(toml: bool) -> dict[str, st.SearchStrategy[Any]]:
    """A plausible-or-not value for every field any layer may have (and a few it may not)."""
    anything = junk(toml=toml)
    names = st.sampled_from(LAYER_NAMES if toml else [*LAYER_NAMES, "r\ud800", "f\udcff"])
    indexes = st.sampled_from(INDEX_NAMES)
    implementations = st.sampled_from(
        [
            "cpython@3.12",
            "cpython@3.11.9",
            "cpython@3.14.0b1",
            "pypy@3.10",
            "cpython3.12",
            "cpython@3",
        ]
    )
    return {
        "name": either(names, anything),
        "requirements": either(st.lists(st.sampled_from(REQUIREMENTS), max_size=3), anything),
        "platforms": either(
            st.lists(st.sampled_from([*PLATFORMS, "win32_x86_64", ""]), max_size=4), anything
        ),
        "versioned": either(st.booleans(), anything),
        "linux_target": either(
            st.sampled_from(["glibc", "glibc@2.28", "glibc@2.35", "glibc@235", "musl", "glibc@"]),
            anything,
        ),
        "macosx_target": either(
            st.sampled_from(["13", "13.0", "10.10", "x", "14.2.1"]) | st.integers(0, 20), anything
        ),
        "dynlib_exclude": either(st.lists(st.sampled_from(["*", "libfoo.*", "**/x"])), anything),
        "package_indexes": either(
            st.dictionaries(st.sampled_from(["torch", "Torch", "numpy"]), indexes, max_size=2),
            anything,
        ),
        "priority_indexes": either(st.lists(indexes, max_size=2), anything),
        "index_overrides": either(st.dictionaries(indexes, indexes, max_size=2), anything),
        "python_implementation": either(implementations, anything),
        "fully_versioned_name": either(implementations, anything),
        "build_requirements": anything,
        "source": either(
            st.sampled_from(["python-build-standalone", "local", "bogus"])
            | st.fixed_dictionaries(
                {
                    "url": st.sampled_from(["https://example.invalid/py.tar.gz", "ftp://x", ""]),
                    "sha256": st.sampled_from(["a" * 64, "xyz", "A" * 64]),
                },
                optional={"extra": anything},
            ),
            anything,
        ),
        "runtime": either(names, anything),
        "frameworks": either(st.lists(names, max_size=3), anything),
        "launch_module": either(st.sampled_from(MODULES), anything),
        "support_modules": either(st.lists(st.sampled_from(MODULES), max_size=3), anything),
        "requirement": anything,
        "unknown_field": anything,
    }


_KIND_FIELDS = {
    "runtimes": ["python_implementation", "fully_versioned_name", "source"],
    "frameworks": ["runtime", "frameworks"],
    "applications": ["runtime", "frameworks", "launch_module", "support_modules"],
}
_COMMON = [
    "platforms",
    "versioned",
    "linux_target",
    "macosx_target",
    "dynlib_exclude",
    "package_indexes",
    "priority_indexes",
    "index_overrides",
    "build_requirements",
]


@st.composite
def layer(draw: st.DrawFn, table: str, toml: bool) -> Any:
    """One layer table: usually close to valid, sometimes any mix of fields, sometimes junk."""
    values = field_values(toml)
    style = draw(st.sampled_from(["plausible", "plausible", "chaos", "junk"]))
    if style == "junk":
        return draw(junk(toml=toml))
    if style == "chaos":
        return draw(st.fixed_dictionaries({}, optional=values))
    result: dict[str, Any] = {
        "name": draw(values["name"]),
        "requirements": draw(values["requirements"]),
    }
    kind_fields = _KIND_FIELDS[table]
    required = {"runtimes": ["python_implementation"], "applications": ["launch_module"]}
    for key in required.get(table, []):
        result[key] = draw(values[key])
    if table != "runtimes":
        key = draw(st.sampled_from(["runtime", "frameworks", "runtime", "frameworks", "both"]))
        for chosen in ("runtime", "frameworks") if key == "both" else (key,):
            result[chosen] = draw(values[chosen])
    extra = draw(st.lists(st.sampled_from(_COMMON + kind_fields), max_size=3, unique=True))
    for key in extra:
        result[key] = draw(values[key])
    return result


@st.composite
def documents(draw: st.DrawFn, toml: bool) -> Any:
    """A whole spec document: layers, tool tables, stray keys; occasionally not a table at all."""
    anything = junk(toml=toml)
    if draw(st.integers(0, 30)) == 0:
        return draw(anything)
    indexes = st.sampled_from(INDEX_NAMES)
    index_entry = st.fixed_dictionaries(
        {},
        optional={
            "name": either(indexes, anything),
            "url": either(st.just("https://example.invalid/simple"), anything),
            "explicit": st.booleans(),
        },
    )
    uv = st.fixed_dictionaries(
        {},
        optional={
            "index": either(st.lists(index_entry, max_size=3), anything),
            "sources": either(
                st.dictionaries(
                    st.sampled_from(["torch", "Torch"]),
                    either(st.fixed_dictionaries({"index": either(indexes, anything)}), anything),
                    max_size=2,
                ),
                anything,
            ),
            "exclude-newer": anything,
        },
    )
    stacks_table = st.fixed_dictionaries(
        {},
        optional={
            "runtime_source": either(
                st.sampled_from(["local", "python-build-standalone", "x"]), anything
            ),
            "python_mirror": either(
                st.sampled_from(["https://m.invalid", "file:///m", "m"]), anything
            ),
            "typo": anything,
        },
    )
    tool = either(
        st.fixed_dictionaries(
            {}, optional={"uv": either(uv, anything), "stacks": either(stacks_table, anything)}
        ),
        anything,
    )
    optional = {
        table: either(st.lists(layer(table, toml), max_size=3), anything) for table in _KIND_FIELDS
    }
    optional["tool"] = tool
    optional["runtime"] = anything
    return draw(st.fixed_dictionaries({}, optional=optional))


@st.composite
def valid_stacks(draw: st.DrawFn, toml: bool) -> dict[str, Any]:
    """A spec that loads: runtimes, frameworks on earlier layers, apps on top, shared indexes."""
    name_chars = st.characters(categories=["L", "N"]) | st.sampled_from("._-@+ ")
    if not toml:
        name_chars = name_chars | st.sampled_from("\ud800\udcff")
    names = (
        st.lists(name_chars, min_size=1, max_size=6)
        .map("".join)
        .filter(lambda n: n.strip() == n and n[0] not in ".-")
        .filter(lambda n: not n.endswith(".") and n.split(".")[0].upper() not in WINDOWS_DEVICES)
    )
    runtimes = draw(st.lists(names, min_size=1, max_size=2, unique=True))
    frameworks = draw(st.lists(names, max_size=4, unique=True))
    apps = draw(st.lists(names, max_size=3, unique=True))
    doc: dict[str, Any] = {
        "tool": {
            "uv": {
                "index": [
                    {"name": "cpu", "url": "https://example.invalid/cpu", "explicit": True},
                    {"name": "cu128", "url": "https://example.invalid/cu128", "explicit": True},
                ]
            }
        },
        "runtimes": [
            {
                "name": name,
                "python_implementation": draw(st.sampled_from(["cpython@3.12", "cpython@3.11.9"])),
                "requirements": draw(st.lists(st.sampled_from(REQUIREMENTS[:2]), max_size=2)),
            }
            for name in runtimes
        ],
    }
    # Python's own MRO (via real classes) decides which framework lists C3 can merge.
    runtime_class = {name: type(f"runtime_{i}", (), {}) for i, name in enumerate(runtimes)}
    classes: dict[str, type] = {}
    runtime_of: dict[str, str] = {}

    def depend(entry: dict[str, Any]) -> type:
        runtime = draw(st.sampled_from(runtimes))
        below = [f for f in classes if runtime_of[f] == runtime]
        if below and draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(below), min_size=1, unique=True))
            try:
                made = type("layer", tuple(classes[f] for f in chosen), {})
            except TypeError:  # no consistent MRO: put this one straight on its runtime
                pass
            else:
                entry["frameworks"] = chosen
                return made
        entry["runtime"] = runtime
        return type("layer", (runtime_class[runtime],), {})

    doc["frameworks"] = []
    for name in frameworks:
        entry: dict[str, Any] = {"name": name, "requirements": []}
        classes[name] = depend(entry)
        runtime_of[name] = entry.get("runtime") or runtime_of[entry["frameworks"][0]]
        doc["frameworks"].append(entry)
    doc["applications"] = []
    for name in apps:
        entry = {
            "name": name,
            "requirements": [],
            "launch_module": draw(st.sampled_from(MODULES[:2])),
        }
        depend(entry)
        doc["applications"].append(entry)
    return doc


def _containers(value: Any) -> list[Any]:
    """Every dict and list inside `value`, itself included."""
    found = []
    if isinstance(value, (dict, list)):
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            found.extend(_containers(item))
    return found


@st.composite
def mutated_stacks(draw: st.DrawFn, toml: bool) -> dict[str, Any]:
    """A valid spec with a few values replaced, added or removed anywhere in it."""
    doc = draw(valid_stacks(toml))
    values = field_values(toml)
    for _ in range(draw(st.integers(1, 3))):
        container = draw(st.sampled_from(_containers(doc)))
        if isinstance(container, list):
            if container and draw(st.booleans()):
                container[draw(st.integers(0, len(container) - 1))] = draw(junk(toml=toml))
            else:
                container.append(draw(junk(toml=toml)))
            continue
        key = draw(
            st.sampled_from([*container, *values]) if container else st.sampled_from(list(values))
        )
        action = draw(st.sampled_from(["plausible", "junk", "delete"]))
        if action == "delete":
            container.pop(key, None)
        elif action == "plausible" and key in values:
            container[key] = draw(values[key])
        else:
            container[key] = draw(junk(toml=toml))
    return doc


@pytest.fixture(scope="module")
def spec_dir() -> Iterator[Path]:
    """A folder with the modules the generated specs may name."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "launch" / "pkg").mkdir(parents=True)
        (root / "launch" / "pkg" / "__main__.py").write_text("print('pkg')\n")
        (root / "launch" / "nomain").mkdir()
        (root / "launch" / "other").mkdir()
        for name in ("app.py", "helper.py", "bad-name.py", "other/app.py"):
            (root / "launch" / name).write_text("print('hi')\n")
        (root / "launch" / "notes.txt").write_text("not a module\n")
        yield root


def run_show(args: list[str]) -> tuple[int, str, str]:
    """Run `stacks` in-process with strict UTF-8 streams, as a terminal would have."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", newline="")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    out.flush()
    err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()  # type: ignore[attr-defined]


def check_show(path: Path, use_json: bool) -> None:
    """`stacks show` either shows the stack or reports a spec error, nothing else."""
    args = ["show", str(path), *(["--json"] if use_json else [])]
    code, out, err = run_show(args)
    event(f"exit {code}")
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error: "), err
        assert str(path) in err
    elif use_json:
        document = json.loads(out)
        assert set(document) == {"spec_name", "runtimes", "frameworks", "applications"}
    else:
        assert out.startswith(path.name)


@FUZZ_SETTINGS
@given(
    document=documents(toml=True) | mutated_stacks(toml=True) | valid_stacks(toml=True),
    use_json=st.booleans(),
)
def test_any_toml_document_is_shown_or_reported(
    spec_dir: Path, document: Any, use_json: bool
) -> None:
    """Random TOML documents never crash `stacks show`."""
    if not isinstance(document, dict):
        document = {"value": document}
    text = dumps(document)
    assert tomllib.loads(text) is not None
    path = spec_dir / "stack.toml"
    path.write_text(text, encoding="utf-8")
    check_show(path, use_json)


@FUZZ_SETTINGS
@given(
    document=documents(toml=False) | mutated_stacks(toml=False) | valid_stacks(toml=False),
    use_json=st.booleans(),
)
def test_any_yaml_document_is_shown_or_reported(
    spec_dir: Path, document: Any, use_json: bool
) -> None:
    """Random YAML documents (any key types, nulls, non-table roots) never crash `stacks show`."""
    path = spec_dir / "stack.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")  # escapes non-ASCII
    check_show(path, use_json)


_SPEC_ALPHABET = string.ascii_letters + string.digits + " =[]{}\"'.,:-@#\n\t\\_"


@FUZZ_SETTINGS
@given(
    text=st.text(alphabet=_SPEC_ALPHABET, max_size=120) | st.binary(max_size=60).map(repr),
    suffix=st.sampled_from([".toml", ".yaml", ".yml"]),
)
def test_any_text_is_shown_or_reported(spec_dir: Path, text: str, suffix: str) -> None:
    """Arbitrary file contents (mostly syntax errors) never crash `stacks show`."""
    path = spec_dir / f"raw{suffix}"
    path.write_text(text, encoding="utf-8")
    check_show(path, use_json=False)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=80), suffix=st.sampled_from([".toml", ".yaml"]))
def test_any_bytes_are_shown_or_reported(spec_dir: Path, data: bytes, suffix: str) -> None:
    """Files that are not even UTF-8 text never crash `stacks show`."""
    path = spec_dir / f"bytes{suffix}"
    path.write_bytes(data)
    check_show(path, use_json=False)


def same(left: Any, right: Any) -> bool:
    """Equality where NaN equals NaN."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    return type(left) is type(right) and left == right


@settings(max_examples=100, deadline=None)
@given(document=documents(toml=True) | valid_stacks(toml=True))
def test_toml_writer_round_trips(document: Any) -> None:
    """The test TOML writer writes what tomllib reads back."""
    if not isinstance(document, dict):
        document = {"value": document}
    assert same(tomllib.loads(dumps(document)), document)


@settings(max_examples=60, deadline=None)
@given(document=valid_stacks(toml=True))
def test_generated_valid_stacks_load_in_mro_order(spec_dir: Path, document: dict[str, Any]) -> None:
    """Generated valid stacks load, and every layer's frameworks come in Python's MRO order."""
    path = spec_dir / "valid.toml"
    path.write_text(dumps(document), encoding="utf-8")
    code, _out, err = run_show(["show", str(path)])
    assert code == 0, err
    expected = mro_orders(document)
    for layer in load_spec(path, environ={}).layers:
        if layer.kind is not LayerKind.RUNTIME:
            assert list(layer.linearised) == expected[layer.env_name]
