"""The benchmark spec generator: exact layer counts, valid, deep diamonds, C3 = MRO."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from mro import mro_orders

from stacks.spec import LayerKind, StackSpec, load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GEN_SPEC = Path(__file__).resolve().parent.parent / "bench" / "gen_spec.py"


@pytest.fixture(scope="module")
def gen_spec() -> ModuleType:
    """bench/gen_spec.py, imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_spec", GEN_SPEC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_200_layer_spec_loads(gen_spec: ModuleType, tmp_path: Path) -> None:
    """A generated 200-layer spec loads quickly, every layer enabled, orders equal to MRO."""
    path = gen_spec.write_spec(tmp_path, 200)
    started = time.perf_counter()
    spec = load_spec(path, environ={})
    assert time.perf_counter() - started < 5
    assert len(spec.layers) == 200 and spec.disabled == ()
    counts = {kind: len(spec.of_kind(kind)) for kind in LayerKind}
    assert counts == {LayerKind.RUNTIME: 3, LayerKind.FRAMEWORK: 148, LayerKind.APPLICATION: 49}
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    expected = mro_orders(document)
    for layer in spec.layers:
        if layer.kind is not LayerKind.RUNTIME:
            assert list(layer.linearised) == expected[layer.env_name]
    # Diamonds: some layer reaches one framework through two of its declared frameworks.
    assert any(_has_diamond(spec, layer.env_name) for layer in spec.layers)
    assert max(len(layer.dependencies) for layer in spec.layers) > 10
    assert all((tmp_path / "launch" / f"app_{i:03d}.py").is_file() for i in range(49))


def _has_diamond(spec: StackSpec, env_name: str) -> bool:
    """Whether two of a layer's declared frameworks share a framework below them."""
    layer = spec.layer(env_name)
    seen: set[str] = set()
    for framework in layer.frameworks:
        below = set(spec.layer(framework).linearised)
        if below & seen:
            return True
        seen |= below
    return False


@pytest.mark.parametrize("n_layers", [1, 2, 3, 7, 41, 120])
def test_exact_layer_count_and_valid(gen_spec: ModuleType, tmp_path: Path, n_layers: int) -> None:
    """Any size gives exactly that many enabled layers."""
    spec = load_spec(gen_spec.write_spec(tmp_path, n_layers, seed=n_layers), environ={})
    assert len(spec.layers) == n_layers
    assert sum(gen_spec.layer_counts(n_layers)) == n_layers


def test_same_seed_same_spec(gen_spec: ModuleType) -> None:
    """Generation is deterministic for a seed (benchmarks compare like with like)."""
    assert gen_spec.generate_spec(60, seed=3) == gen_spec.generate_spec(60, seed=3)
    assert gen_spec.generate_spec(60, seed=3) != gen_spec.generate_spec(60, seed=4)


def test_zero_layers_is_refused(gen_spec: ModuleType) -> None:
    """A stack needs at least one layer."""
    with pytest.raises(ValueError, match="at least one layer"):
        gen_spec.generate_spec(0)


def test_script_writes_the_spec(
    gen_spec: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python bench/gen_spec.py N FOLDER` writes FOLDER/stack.toml and prints its path."""
    assert gen_spec.main(["12", str(tmp_path), "--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "stack.toml")
    assert len(load_spec(tmp_path / "stack.toml", environ={}).layers) == 12


@pytest.mark.parametrize("shape", ["chain", "wide"])
def test_shaped_specs_load_with_the_shape_asked_for(
    gen_spec: ModuleType, tmp_path: Path, shape: str
) -> None:
    """`shaped_spec` (the scale-graph benchmark's specs): N frameworks, in C3 = MRO order."""
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "app_000.py").write_text("print('app')\n")
    path = tmp_path / "stack.toml"
    path.write_text(gen_spec.shaped_spec(shape, 50), encoding="utf-8")
    spec = load_spec(path, environ={})
    assert len(spec.of_kind(LayerKind.FRAMEWORK)) == 50
    expected = mro_orders(tomllib.loads(path.read_text(encoding="utf-8")))
    app = spec.layer("app-app")
    assert list(app.linearised) == expected["app-app"]
    assert len(app.linearised) == 50
    if shape == "chain":
        assert app.linearised[0] == "framework-f49"
