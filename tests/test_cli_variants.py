"""Variants on the command line without locking: show, list, info, --variant, deploy --variant."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from stackrun import stacks

from stacks.deploy.deploy import DeployError, main, only_variants, read_manifest

SPEC = """
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "torch"
runtime = "cpython-3.12"
requirements = ["six"]
[frameworks.variants.cpu]
[frameworks.variants.cuda]
platforms = ["linux_x86_64"]

[[applications]]
name = "chat"
launch_module = "chat.py"
frameworks = ["torch"]
requirements = []
versioned = true

[[applications]]
name = "tool"
launch_module = "chat.py"
runtime = "cpython-3.12"
requirements = []
"""


@pytest.fixture
def spec(write_spec: Callable[..., Path], tmp_path: Path) -> Path:
    """The spec, with its launch module."""
    (tmp_path / "chat.py").write_text("print('hi')\n")
    return write_spec(SPEC)


def test_show_tree_and_json_show_the_expansion(spec: Path) -> None:
    tree = stacks("show", spec).stdout
    assert "*app-chat-cuda -> app-chat-cuda@???  [variant cuda of app-chat]" in tree
    data = stacks("show", spec, "--json").data
    assert data["variants"] == ["cpu", "cuda"]
    apps = {entry["name"]: entry for entry in data["applications"]}
    assert apps["app-chat-cuda"]["variant"] == "cuda"
    assert apps["app-chat-cuda"]["variant_of"] == "app-chat"
    assert apps["app-chat-cuda"]["platforms"] == ["linux_x86_64"]
    assert "variant" not in apps["app-tool"]


def test_variant_keeps_its_layers_and_the_shared_ones(spec: Path) -> None:
    data = stacks("show", spec, "--json", "--variant", "cuda").data
    names = [e["name"] for kind in ("runtimes", "frameworks", "applications") for e in data[kind]]
    assert names == ["cpython-3.12", "framework-torch-cuda", "app-chat-cuda", "app-tool"]
    tasks = [t["task"] for t in stacks("list", spec, "--json", "--variant", "cpu").data["tasks"]]
    assert "lock:app-chat-cpu" in tasks and "lock:app-tool" in tasks
    assert not [t for t in tasks if "cuda" in t]
    both = stacks("list", spec, "--json", "--variant", "cpu", "--variant", "cuda").data["tasks"]
    assert {"lock:app-chat-cpu", "lock:app-chat-cuda"} <= {t["task"] for t in both}
    plan = stacks("lock", spec, "--dry-run", "--json", "--include", "app-*-cuda").data["plan"]
    assert {p["task"] for p in plan} == {
        "runtime:cpython-3.12",
        "lock:cpython-3.12",
        "lock:framework-torch-cuda",
        "lock:app-chat-cuda",
    }


def test_info_names_the_variant_and_the_lock_it_follows(spec: Path) -> None:
    info = stacks("info", spec, "lock:app-chat-cuda", "--json").data
    assert (info["variant"], info["variant_of"]) == ("cuda", "app-chat")
    assert "lock:app-chat-cpu" in info["depends_on"]  # locked alike with the first variant
    assert "variant: cuda (of app-chat)" in stacks("info", spec, "lock:app-chat-cuda").stdout


def test_unknown_variants_are_usage_errors(spec: Path, write_spec: Callable[..., Path]) -> None:
    wrong = stacks("lock", spec, "--variant", "cdua", check=False)
    assert wrong.code == 2
    assert "error: unknown variant: cdua" in wrong.stderr
    assert "did you mean 'cuda'? (variants in stack.toml: cpu, cuda)" in wrong.stderr
    plain = write_spec(SPEC.split("[frameworks.variants.cpu]")[0], name="plain.toml")
    none = stacks("show", plain, "--variant", "cpu", check=False)
    assert none.code == 2 and "--variant cpu: plain.toml has no variants" in none.stderr


def _manifest(folder: Path, variants: dict[str, list[str]] | None) -> Path:
    """A stack manifest with three layers (no archives: deploy only reads the manifest here)."""

    def entry(name: str, kind: str, **more: object) -> dict[str, object]:
        return {
            "layer_name": name,
            "install_target": name,
            "kind": kind,
            "runtime_layer": "cpython-3.12",
            "archive_name": f"{name}.tar.gz",
            "archive_size": 1,
            "archive_hashes": {"sha256": "0" * 64},
            **more,
        }

    layers = {
        "runtimes": [entry("cpython-3.12", "runtime")],
        "frameworks": [
            entry(f"framework-torch-{v}", "framework", variant=v, required_layers=[])
            for v in ("cpu", "cuda")
        ],
        "applications": [],
    }
    document: dict[str, object] = {"layers": layers}
    if variants is not None:
        document["variants"] = variants
    (folder / "__stacks__").mkdir(parents=True)
    (folder / "__stacks__" / "stack.json").write_text(json.dumps(document))
    return folder


def test_deploy_filters_the_manifest_records_by_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = {"cpu": ["framework-torch-cpu"], "cuda": ["framework-torch-cuda"]}
    out = _manifest(tmp_path / "out", groups)
    records = read_manifest(out)
    kept = only_variants(records, out, None, ["cuda"])
    assert [r.layer_name for r in kept] == ["cpython-3.12", "framework-torch-cuda"]
    with pytest.raises(DeployError) as caught:
        only_variants(records, out, None, ["rocm"])
    assert caught.value.exit_code == 2
    assert "no variant 'rocm' in the stack (variants: cpu, cuda)" in str(caught.value)
    plain = _manifest(tmp_path / "plain", None)
    assert main([str(plain), "--target", str(tmp_path / "t"), "--variant", "cpu"]) == 2
    assert f"--variant cpu: the stack in {plain} has no variants" in capsys.readouterr().err
