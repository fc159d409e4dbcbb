"""Hardware variants end to end: lock, build, run, publish, export and deploy a CPU and a CUDA stack.

Three package indexes on 127.0.0.1 stand in for PyPI and the torch CPU and CUDA indexes:
`stx-accel` 1.0+cpu and 1.0+cuda (one name, a wheel per variant, each reporting its
variant), and on the default one `stx-shared` (the app's package that must resolve the same
in both variants), `stx-gate` (pinned differently by each variant) and `stx-helper` (whose
versions need different `stx-gate`s, so it has to differ between the variants).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import FaultyServer
from projects import no_traceback, private_uv_cache, write_project
from stackrun import stacks
from wheels import build_wheel

pytestmark = pytest.mark.slow

CHAT = """
import json
import stx_accel, stx_helper, stx_shared
print(json.dumps({"variant": stx_accel.VARIANT, "shared": stx_shared.VERSION,
                  "helper": stx_helper.VERSION}))
"""


def spec_text(base: str) -> str:
    """The stack: a torch-like framework in two variants and a versioned app above it."""
    return f"""
[[tool.uv.index]]
name = "base"
url = "{base}/base/simple"
default = true

[[tool.uv.index]]
name = "accel-cpu"
url = "{base}/cpu/simple"
explicit = true

[[tool.uv.index]]
name = "accel-cuda"
url = "{base}/cuda/simple"
explicit = true

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "torch"
runtime = "cpython-3.12"
requirements = ["stx-accel"]

[frameworks.variants.cpu]
package_indexes = {{ stx-accel = "accel-cpu" }}
requirements = ["stx-gate==2.0"]

[frameworks.variants.cuda]
package_indexes = {{ stx-accel = "accel-cuda" }}
requirements = ["stx-gate==1.0"]
platforms = ["linux_x86_64", "win_amd64"]

[[applications]]
name = "chat"
launch_module = "chat.py"
frameworks = ["torch"]
requirements = ["stx-shared", "stx-helper"]
versioned = true
"""


def serve_wheel(server: FaultyServer, index: str, wheel: Path) -> None:
    """Add a wheel to a PEP 503 index on the server (its project page lists every wheel so far)."""
    data = wheel.read_bytes()
    url = server.serve(f"/{index}/files/{wheel.name}", data)
    project = wheel.name.split("-")[0].replace("_", "-")
    pages = serve_wheel.pages.setdefault((index, project), [])  # type: ignore[attr-defined]
    pages.append(f'<a href="{url}#sha256={hashlib.sha256(data).hexdigest()}">{wheel.name}</a>')
    html = "<html><body>" + "".join(pages) + "</body></html>"
    server.serve(f"/{index}/simple/{project}/", html.encode(), content_type="text/html")


serve_wheel.pages = {}  # type: ignore[attr-defined]

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultyServer, Path]]:
    """The three indexes, serving the wheels built here (`stx-shared` 2.0 is added later)."""
    wheels = tmp_path_factory.mktemp("wheels")
    with FaultyServer() as server:
        for variant in ("cpu", "cuda"):
            module = {"stx_accel.py": f'VARIANT = "{variant}"\n'}
            serve_wheel(
                server,
                variant,
                build_wheel(wheels / variant, "stx-accel", f"1.0+{variant}", files=module),
            )
        serve_wheel(server, "base", build_wheel(wheels, "stx-shared", "1.0"))
        for version in ("1.0", "2.0"):
            serve_wheel(server, "base", build_wheel(wheels, "stx-gate", version))
        helper_needs = {"1.0": "stx-gate<2", "2.0": "stx-gate>=2"}
        for version, needs in helper_needs.items():
            serve_wheel(
                server, "base", build_wheel(wheels, "stx-helper", version, requires=[needs])
            )
        yield server, wheels


def run_app(python: Path) -> dict[str, str]:
    """What the chat app prints, run with a layer's python."""
    done = subprocess.run(
        [str(python), "-m", "chat"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_variants_lock_alike_build_run_publish_export_and_deploy(
    indexes: tuple[FaultyServer, Path], tmp_path: Path
) -> None:
    server, wheels = indexes
    spec = write_project(tmp_path / "project", spec_text(server.base_url), {"chat.py": CHAT})

    # Lock the first variant alone; then a newer stx-shared appears on the index.
    no_traceback(stacks("lock", spec, "--variant", "cpu"))
    shown = stacks("show", spec, "--json").data
    valid = {entry["name"]: entry["has_valid_lock"] for entry in shown["applications"]}
    assert valid == {"app-chat-cpu": True, "app-chat-cuda": False}
    assert shown["variants"] == ["cpu", "cuda"]
    serve_wheel(server, "base", build_wheel(wheels, "stx-shared", "2.0"))

    # The CUDA variant follows the CPU one wherever its lower layers allow.
    lock = stacks("lock", spec, "--json")
    assert lock.ran("lock") == ["lock:app-chat-cuda", "lock:framework-torch-cuda"]
    cuda_meta = json.loads(
        (spec.parent / "requirements/app-chat-cuda/pylock.app-chat-cuda.meta.json").read_text()
    )
    record = cuda_meta["variants"]
    assert record["variant"] == "cuda" and record["locked_alike_with"] == "app-chat-cpu"
    assert [d["package"] for d in record["differences"]] == ["stx-helper"]
    helper = record["differences"][0]
    assert helper["versions"] == {"cpu": ["2.0"], "cuda": ["1.0"]}
    assert "the cuda variant's lower layers do not allow cpu's version" in helper["reason"]
    assert "stx-gate 1.0 (cpu: 2.0)" in helper["reason"]
    summary = (spec.parent / "requirements/app-chat-cuda/packages-app-chat-cuda.txt").read_text()
    assert "stx-shared==1.0" in summary  # not 2.0: the CPU variant locked 1.0
    tree = stacks("show", spec).stdout
    assert "app-chat-cuda -> app-chat-cuda@1  [variant cuda of app-chat]" in tree
    assert "differs from app-chat-cpu: stx-helper: 2.0 in cpu, 1.0 in cuda (" in tree
    fw = json.loads(
        (
            spec.parent / "requirements/framework-torch-cuda/pylock.framework-torch-cuda.meta.json"
        ).read_text()
    )
    reasons = {d["package"]: d["reason"] for d in fw["variants"]["differences"]}
    assert reasons == {
        "stx-accel": "the cuda variant installs it from another package index",
        "stx-gate": "the cuda variant requires stx-gate==1.0",
    }

    # Build and run each variant's app.
    no_traceback(stacks("build", spec))
    builds = spec.parent / "cache" / "build"
    expected = {
        "cpu": {"variant": "cpu", "shared": "1.0", "helper": "2.0"},
        "cuda": {"variant": "cuda", "shared": "1.0", "helper": "1.0"},
    }
    for variant, printed in expected.items():
        assert run_app(builds / f"app-chat-{variant}" / "bin" / "python") == printed
        assert json.loads(stacks("run", spec, f"app-chat-{variant}").stdout) == printed

    # Publish: metadata records the variant, the manifest groups the layers by variant.
    out = tmp_path / "out"
    no_traceback(stacks("publish", spec, "--format", "tar.gz", "--output-dir", out))
    manifest = json.loads((out / "__stacks__" / "stack.json").read_text())
    assert manifest["variants"] == {
        "cpu": ["framework-torch-cpu", "app-chat-cpu"],
        "cuda": ["framework-torch-cuda", "app-chat-cuda"],
    }
    apps = {entry["layer_name"]: entry for entry in manifest["layers"]["applications"]}
    assert apps["app-chat-cuda"]["variant"] == "cuda"
    assert apps["app-chat-cuda"]["install_target"] == "app-chat-cuda@1"
    assert "variant" not in manifest["layers"]["runtimes"][0]

    # Deploy one variant: its layers and the shared runtime only.
    target = tmp_path / "deployed"
    no_traceback(stacks("deploy", out, "--target", target, "--variant", "cuda"))
    # (deploy's own record of the deployment is a dot file beside the layers)
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == [
        "app-chat-cuda@1",
        "cpython-3.12",
        "framework-torch-cuda",
    ]
    assert run_app(target / "app-chat-cuda@1" / "bin" / "python") == expected["cuda"]
    bad = stacks("deploy", out, "--target", target, "--variant", "rocm", check=False)
    assert bad.code == 2 and "no variant 'rocm' in the stack (variants: cpu, cuda)" in bad.stderr

    # Export one variant; a relock of one variant gives only its versioned layer a new @N.
    exported = tmp_path / "exported"
    export = stacks("export", spec, "--variant", "cpu", "--output-dir", exported, "--json")
    assert export.ran("export") == [
        "export:__stack__",
        "export:app-chat-cpu",
        "export:cpython-3.12",
        "export:framework-torch-cpu",
    ]
    assert run_app(exported / "app-chat-cpu@1" / "bin" / "python") == expected["cpu"]
    relock = stacks("lock", spec, "--variant", "cuda", "--reset-lock", "app-chat-cuda", "--json")
    assert relock.ran("lock") == ["lock:app-chat-cuda"]
    summary = (spec.parent / "requirements/app-chat-cuda/packages-app-chat-cuda.txt").read_text()
    assert "stx-shared==1.0" in summary
    names = {
        e["name"]: e["install_target"] for e in stacks("show", spec, "--json").data["applications"]
    }
    assert names == {"app-chat-cpu": "app-chat-cpu@1", "app-chat-cuda": "app-chat-cuda@1"}

    # Errors: an unknown variant on the command line.
    wrong = stacks("build", spec, "--variant", "cdua", check=False)
    assert wrong.code == 2
    assert "unknown variant: cdua" in wrong.stderr and "did you mean 'cuda'?" in wrong.stderr
