"""Hardware variants in a spec: a framework's `variants` table and the expansion above it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stacks.errors import SpecError
from stacks.spec import LayerKind, load_spec, select_layers

_INDEXES = """
[[tool.uv.index]]
name = "accel-cpu"
url = "https://cpu.example/simple"
explicit = true

[[tool.uv.index]]
name = "accel-cuda"
url = "https://cuda.example/simple"
explicit = true
"""

_RUNTIME = """
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []
"""

_TORCH = """
[[frameworks]]
name = "torch"
runtime = "cpython-3.12"
requirements = ["accel"]
dynlib_exclude = ["libbase.so"]

[frameworks.variants.cpu]
package_indexes = { accel = "accel-cpu" }

[frameworks.variants.cuda]
package_indexes = { accel = "accel-cuda" }
requirements = ["six"]
platforms = ["linux_x86_64", "win_amd64"]
dynlib_exclude = ["libcuda.so*"]
"""

_CHAT = """
[[applications]]
name = "chat"
launch_module = "chat.py"
frameworks = ["torch"]
requirements = ["idna"]
"""


@pytest.fixture
def variant_spec(write_spec: Callable[..., Path], tmp_path: Path) -> Callable[[str], Path]:
    """Write a spec (with the two indexes and a runtime) whose app's launch module exists."""
    (tmp_path / "chat.py").write_text("print('hi')\n")

    def _write(layers: str) -> Path:
        return write_spec(_INDEXES + _RUNTIME + layers)

    return _write


def problems_of(path: Path) -> list[str]:
    """The problems loading a spec reports, one line each."""
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    return [str(p) for p in caught.value.problems]


def test_a_variant_framework_and_the_app_above_expand_per_variant(
    variant_spec: Callable[[str], Path],
) -> None:
    spec = load_spec(variant_spec(_TORCH + _CHAT), environ={})
    assert [layer.env_name for layer in spec.layers] == [
        "cpython-3.12",
        "framework-torch-cpu",
        "framework-torch-cuda",
        "app-chat-cpu",
        "app-chat-cuda",
    ]
    cpu, cuda = spec.layer("framework-torch-cpu"), spec.layer("framework-torch-cuda")
    assert (cpu.variant, cpu.variant_of) == ("cpu", "framework-torch")
    assert cpu.requirements == ("accel",) and cuda.requirements == ("accel", "six")
    assert dict(cpu.package_indexes) == {"accel": "accel-cpu"}
    assert dict(cuda.package_indexes) == {"accel": "accel-cuda"}
    assert cuda.platforms == ("linux_x86_64", "win_amd64")
    assert cuda.dynlib_exclude == ("libbase.so", "libcuda.so*")
    chat_cuda = spec.layer("app-chat-cuda")
    assert chat_cuda.dependencies == ("framework-torch-cuda", "cpython-3.12")
    assert chat_cuda.platforms == ("linux_x86_64", "win_amd64")
    assert chat_cuda.requirements == ("idna",) and chat_cuda.launch_module is not None
    assert (chat_cuda.variant, chat_cuda.variant_of) == ("cuda", "app-chat")
    assert dict(chat_cuda.package_indexes) == {"accel": "accel-cuda"}
    assert spec.variants == ("cpu", "cuda")
    assert spec.layer("cpython-3.12").variant is None


def test_include_patterns_match_expanded_names(variant_spec: Callable[[str], Path]) -> None:
    spec = load_spec(variant_spec(_TORCH + _CHAT), environ={})
    layers, _ = select_layers(spec, ["app-*-cuda"], with_dependents=False)
    assert [layer.env_name for layer in layers] == [
        "cpython-3.12",
        "framework-torch-cuda",
        "app-chat-cuda",
    ]
    assert select_layers(spec, ["app-chat"])[1] == ["app-chat"]


def test_a_layer_with_explicit_platforms_gets_only_its_variants(
    variant_spec: Callable[[str], Path],
) -> None:
    spec = load_spec(
        variant_spec(
            _TORCH
            + _CHAT.replace(
                'requirements = ["idna"]',
                'requirements = []\nplatforms = ["linux_x86_64", "macosx_arm64"]',
            )
        ),
        environ={},
    )
    assert spec.layer("app-chat-cpu").platforms == ("linux_x86_64", "macosx_arm64")
    assert spec.layer("app-chat-cuda").platforms == ("linux_x86_64",)


def test_shared_layers_stay_single_and_frameworks_above_expand_too(
    variant_spec: Callable[[str], Path],
) -> None:
    layers = (
        """
[[frameworks]]
name = "base"
runtime = "cpython-3.12"
requirements = ["attrs"]
"""
        + _TORCH.replace('runtime = "cpython-3.12"', 'frameworks = ["base"]')
        + """
[[frameworks]]
name = "llm"
frameworks = ["torch", "base"]
requirements = []
versioned = true
"""
        + _CHAT.replace('["torch"]', '["llm"]')
    )
    spec = load_spec(variant_spec(layers), environ={})
    names = [layer.env_name for layer in spec.layers]
    assert "framework-base" in names and "framework-llm-cpu" in names
    assert spec.layer("app-chat-cpu").dependencies == (
        "framework-llm-cpu",
        "framework-torch-cpu",
        "framework-base",
        "cpython-3.12",
    )
    assert spec.layer("framework-llm-cuda").deployed_name(3) == "framework-llm-cuda@3"


def test_two_variant_frameworks_with_the_same_names_pair_by_name(
    variant_spec: Callable[[str], Path],
) -> None:
    onnx = _TORCH.replace('name = "torch"', 'name = "onnx"').replace(
        'requirements = ["accel"]', "requirements = []"
    )
    spec = load_spec(
        variant_spec(_TORCH + onnx + _CHAT.replace('["torch"]', '["torch", "onnx"]')),
        environ={},
    )
    assert spec.layer("app-chat-cuda").dependencies == (
        "framework-torch-cuda",
        "framework-onnx-cuda",
        "cpython-3.12",
    )
    assert not spec.has_layer("app-chat")


def test_two_different_variant_axes_are_an_error_naming_both(
    variant_spec: Callable[[str], Path],
) -> None:
    rocm = """
[[frameworks]]
name = "onnx"
runtime = "cpython-3.12"
requirements = []
[frameworks.variants.cpu]
[frameworks.variants.rocm]
"""
    problems = problems_of(
        variant_spec(_TORCH + rocm + _CHAT.replace('["torch"]', '["torch", "onnx"]'))
    )
    assert len(problems) == 1, problems
    assert "layer 'app-chat'" in problems[0] and "field 'frameworks'" in problems[0]
    assert "'framework-torch' (variants cpu, cuda)" in problems[0]
    assert "'framework-onnx' (variants cpu, rocm)" in problems[0]
    assert "pair by name" in problems[0]


def test_every_variant_problem_is_reported_at_once(variant_spec: Callable[[str], Path]) -> None:
    bad = """
[[frameworks]]
name = "torch"
runtime = "cpython-3.12"
requirements = []
platforms = ["linux_x86_64"]
[frameworks.variants.cpu]
requirement = ["x"]
[frameworks.variants.cuda]
package_indexes = { accel = "nope" }
platforms = ["win_amd64"]
requirements = ["not a requirement!"]
[frameworks.variants."bad@name"]
[frameworks.variants.gpu]
launch_module = "x.py"
"""
    problems = problems_of(variant_spec(bad))
    text = "\n".join(problems)
    assert "field 'variants.cpu.requirement': unknown field" in text
    assert "did you mean 'requirements'?" in text
    assert (
        "field 'variants.cuda.package_indexes': references an unknown package index 'nope'" in text
    )
    assert (
        "field 'variants.cuda.platforms': lists platforms the framework does not target (win_amd64)"
        in text
    )
    assert "field 'variants.cuda.requirements': invalid requirement syntax" in text
    assert "variant name 'bad@name' cannot end a layer name" in text
    assert "field 'variants.gpu.launch_module': unknown field" in text
    assert all("layer 'framework-torch'" in p for p in problems)


def test_variants_on_an_application_or_empty_are_errors(
    variant_spec: Callable[[str], Path],
) -> None:
    empty = _TORCH.split("[frameworks.variants.cpu]")[0] + "variants = {}\n"
    app = _CHAT + "[applications.variants.cpu]\n"
    problems = problems_of(variant_spec(empty + app.replace('["torch"]', "[]\nruntime = 'x'")))
    text = "\n".join(problems)
    assert (
        "field 'variants': must be a table of variant names to their fields, not an empty table"
        in text
    )
    assert "layer 'app-chat', field 'variants': unknown field" in text
    assert "only allowed on framework layers" in text


def test_an_expanded_name_taken_by_another_layer_is_an_error(
    variant_spec: Callable[[str], Path],
) -> None:
    clash = """
[[frameworks]]
name = "torch-cpu"
runtime = "cpython-3.12"
requirements = []
"""
    problems = problems_of(variant_spec(clash + _TORCH))
    assert any(
        "layer 'framework-torch-cpu', field 'name': variant 'cpu' of framework 'torch' is named"
        " 'framework-torch-cpu', which another framework already is" in p
        for p in problems
    ), problems


def test_yaml_variants_work_the_same(variant_spec: Callable[[str], Path], tmp_path: Path) -> None:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    toml_path = variant_spec(_TORCH + _CHAT)
    document = tomllib.loads(toml_path.read_text())
    yaml_path = tmp_path / "stack.yaml"
    yaml_path.write_text(yaml.safe_dump(document))
    from_toml, from_yaml = load_spec(toml_path, environ={}), load_spec(yaml_path, environ={})
    assert [(layer.env_name, layer.variant) for layer in from_yaml.layers] == [
        (layer.env_name, layer.variant) for layer in from_toml.layers
    ]
    assert from_yaml.layer("app-chat-cuda").platforms == ("linux_x86_64", "win_amd64")


def test_a_spec_without_variants_is_unchanged(variant_spec: Callable[[str], Path]) -> None:
    spec = load_spec(variant_spec(_TORCH.split("[frameworks.variants.cpu]")[0] + _CHAT), environ={})
    assert [layer.env_name for layer in spec.of_kind(LayerKind.FRAMEWORK)] == ["framework-torch"]
    assert all(layer.variant is None and layer.variant_of is None for layer in spec.layers)
    assert spec.variants == ()


def test_the_demo_spec_expands_into_two_variants() -> None:
    from stackrun import REPO

    spec = load_spec(REPO / "specs" / "variants.toml", environ={})
    assert [layer.env_name for layer in spec.layers] == [
        "cpython-3.12",
        "framework-accel-cpu",
        "framework-accel-gpu",
        "app-chat-cpu",
        "app-chat-gpu",
    ]
    assert spec.layer("app-chat-gpu").platforms == ("linux_x86_64", "win_amd64")
    assert spec.layer("framework-accel-gpu").requirements == ("attrs>=23.1", "six==1.17.0")
    assert spec.warnings == ()
