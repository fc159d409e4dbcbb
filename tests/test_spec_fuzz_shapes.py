"""Fault injection on spec shapes and sizes: deep, wide and diamond-laden stacks under a
deadline, huge names and numbers anywhere; `stacks show` exits 0 or 2, never crashes."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mro import mro_orders
from test_spec_fuzz import check_show, run_show
from tomlwriter import dumps

from stacks.spec import LayerKind, load_spec


@pytest.fixture(scope="module")
def spec_dir() -> Iterator[Path]:
    """A folder with the launch module the generated specs name."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "launch").mkdir()
        (Path(folder) / "launch" / "app.py").write_text("print('hi')\n")
        yield Path(folder)


def _shaped_stack(shape: str, depth: int, width: int) -> dict[str, Any]:
    """A valid stack of a given shape: a chain, a wide fan, a ladder of diamonds or a grid."""
    runtime = {"name": "rt", "python_implementation": "cpython@3.12", "requirements": []}
    frameworks: list[dict[str, Any]] = []

    def add(name: str, on: list[str]) -> None:
        frameworks.append(
            {"name": name, "requirements": [], **({"frameworks": on} if on else {"runtime": "rt"})}
        )

    tops: list[str] = []
    if shape == "chain":
        for i in range(depth):
            add(f"c{i}", [f"c{i - 1}"] if i else [])
        tops = [f"c{depth - 1}"]
    elif shape == "wide":
        for i in range(width):
            add(f"w{i}", [])
        add("all", [f"w{i}" for i in range(width)])
        tops = ["all", *(f"w{i}" for i in range(width))]
    elif shape == "ladder":  # every rung sits on the two before it: diamonds all the way down
        for i in range(depth):
            add(f"l{i}", [f"l{j}" for j in (i - 1, i - 2) if j >= 0])
        tops = [f"l{depth - 1}"]
    else:  # grid: `width` chains, the application on all of their tops
        for column in range(width):
            for row in range(max(1, depth // width)):
                add(f"g{column}_{row}", [f"g{column}_{row - 1}"] if row else [])
            tops.append(f"g{column}_{max(1, depth // width) - 1}")
    app = {"name": "app", "launch_module": "launch/app.py", "requirements": [], "frameworks": tops}
    return {"runtimes": [runtime], "frameworks": frameworks, "applications": [app]}


@settings(
    max_examples=25,
    # No deadline: speed is measured by `make bench` (scale-graph) and the peak memory of a
    # 3,000-deep chain is bounded in test_spec_limits.py; this checks the order, at any size.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    shape=st.sampled_from(["chain", "wide", "ladder", "grid"]),
    depth=st.integers(1, 1500),
    width=st.integers(1, 60),
)
def test_deep_and_wide_stacks_load_in_mro_order_quickly(
    spec_dir: Path, shape: str, depth: int, width: int
) -> None:
    """Deep, wide and diamond-laden stacks load in Python's MRO order."""
    if shape == "ladder":
        depth = min(depth, 400)  # its MRO merges two long orders at every rung
    document = _shaped_stack(shape, depth, width)
    path = spec_dir / "shaped.toml"
    path.write_text(dumps(document), encoding="utf-8")
    code, _out, err = run_show(["show", str(path)])
    assert code == 0, err
    expected = mro_orders(document)
    for layer in load_spec(path, environ={}).layers:
        if layer.kind is not LayerKind.RUNTIME:
            assert list(layer.linearised) == expected[layer.env_name]


VALID_BASE = {
    "runtimes": [{"name": "rt", "python_implementation": "cpython@3.12", "requirements": []}],
    "frameworks": [{"name": "fw", "runtime": "rt", "requirements": []}],
    "applications": [
        {"name": "app", "launch_module": "launch/app.py", "frameworks": ["fw"], "requirements": []}
    ],
}
# Where a huge value can go, and how it is written into the layer table.
HUGE_PLACES = {
    "runtime name": lambda doc, v: doc["runtimes"][0].__setitem__("name", v),
    "framework name": lambda doc, v: doc["frameworks"][0].__setitem__("name", v),
    "application name": lambda doc, v: doc["applications"][0].__setitem__("name", v),
    "python_implementation": lambda doc, v: doc["runtimes"][0].__setitem__(
        "python_implementation", f"cpython@3.{v}"
    ),
    "macosx_target": lambda doc, v: doc["frameworks"][0].__setitem__("macosx_target", v),
    "linux_target": lambda doc, v: doc["frameworks"][0].__setitem__("linux_target", f"glibc@2.{v}"),
    "requirement": lambda doc, v: doc["frameworks"][0].__setitem__("requirements", [f"six=={v}"]),
    "versioned": lambda doc, v: doc["frameworks"][0].__setitem__("versioned", v),
}


@st.composite
def huge_values(draw: st.DrawFn) -> str | int:
    """Long names and numbers: near the file-name limit, far past it, thousands of digits."""
    size = draw(st.sampled_from([190, 208, 209, 255, 256, 300, 5000, 1_000_000]))
    kind = draw(st.sampled_from(["letters", "digits", "wide chars", "int"]))
    if kind == "int":
        return int("9" * min(size, 4000))  # within what Python converts to decimal
    char = {"letters": "n", "digits": "1", "wide chars": "é"}[kind]
    return char * size


@settings(max_examples=80, deadline=None)
@given(place=st.sampled_from(sorted(HUGE_PLACES)), value=huge_values(), hex_int=st.booleans())
def test_huge_values_are_reported_never_crash(
    spec_dir: Path, place: str, value: str | int, hex_int: bool
) -> None:
    """A huge name or number anywhere is shown or reported (exit 0 or 2), never a traceback;
    whatever loads has names whose derived file names fit the 255-byte limit."""
    document = json.loads(json.dumps(VALID_BASE))
    HUGE_PLACES[place](document, value)
    if place.endswith("name") and isinstance(value, str):  # keep the references in step
        if place == "runtime name":
            document["frameworks"][0]["runtime"] = value
        elif place == "framework name":
            document["applications"][0]["frameworks"] = [value]
    path = spec_dir / "huge.toml"
    text = dumps(document)
    if hex_int and isinstance(value, int):  # a hex integer that has no decimal form in Python
        text = text.replace(str(value), "0x" + "f" * 4000)
    path.write_text(text, encoding="utf-8")
    check_show(path, use_json=False)
    try:
        spec = load_spec(path, environ={})
    except Exception as exc:  # only a SpecError may come out
        assert type(exc).__name__ == "SpecError", exc
        assert exc.exit_code == 2  # type: ignore[attr-defined]
        return
    for layer in spec.layers:
        longest = f".{layer.env_name}@9999999999-macosx_x86_64.tar.zst.XXXXXXXX.tmp"
        assert len(longest.encode()) <= 255


@st.composite
def random_dags(draw: st.DrawFn) -> dict[str, Any]:
    """Frameworks each on up to three earlier ones in any order: often no C3 order exists."""
    runtime = {"name": "rt", "python_implementation": "cpython@3.12", "requirements": []}
    frameworks: list[dict[str, Any]] = []
    for index in range(draw(st.integers(2, 12))):
        earlier = [f["name"] for f in frameworks]
        picked = (
            draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        )
        entry: dict[str, Any] = {"name": f"f{index}", "requirements": []}
        entry.update({"frameworks": picked} if picked else {"runtime": "rt"})
        frameworks.append(entry)
    return {"runtimes": [runtime], "frameworks": frameworks}


@settings(max_examples=150, deadline=None)
@given(document=random_dags())
def test_any_framework_dag_loads_in_mro_order_or_names_the_disagreement(
    spec_dir: Path, document: dict[str, Any]
) -> None:
    """Where Python finds an MRO the spec loads in it; where it finds none, each failing layer
    gets one error that names two frameworks of its own graph in both orders, and a hint."""
    path = spec_dir / "dag.toml"
    path.write_text(dumps(document), encoding="utf-8")
    try:
        expected = mro_orders(document)
    except TypeError:
        expected = None
    code, _out, err = run_show(["show", str(path)])
    if expected is not None:
        assert code == 0, err
        for layer in load_spec(path, environ={}).layers:
            if layer.kind is not LayerKind.RUNTIME:
                assert list(layer.linearised) == expected[layer.env_name]
        return
    assert code == 2, err
    assert "Traceback" not in err
    assert "dependency linearization failed: the frameworks below cannot be put in one" in err
    assert "  hint: " in err
