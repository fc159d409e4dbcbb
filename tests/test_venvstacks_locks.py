"""Locks venvstacks wrote stay valid: its metadata format, its hashes, its lock versions and names.

The venvstacks-format lock history in the end-to-end test is written here from the format's
definition (its own small hashing, not stacks'), on pylocks that real uv resolved.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from projects import EXCLUDE_NEWER, private_uv_cache, write_project
from stackrun import stacks

from stacks.lock import venvstacks_meta as vs
from stacks.lock.locking import lock_state
from stacks.lock.metadata import lock_paths, read_lock_meta
from stacks.spec import load_spec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

uv_cache = pytest.fixture(scope="module")(private_uv_cache)

# venvstacks' sample project (tests/sample_project/venvstacks.toml), layer fields only.
SAMPLE_SPEC = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.11"
requirements = ["numpy", "dlltracer; sys_platform == 'win32'"]

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12.9"
versioned = true
requirements = ["numpy"]

[[frameworks]]
name = "scipy"
versioned = true
runtime = "cpython-3.11"
requirements = ["scipy"]

[[frameworks]]
name = "http-client"
runtime = "cpython-3.11"
requirements = ["httpx", "h11>=0.15.0"]

[[applications]]
name = "scipy-client"
launch_module = "launch_modules/scipy_client"
frameworks = ["scipy", "http-client"]
requirements = ["scipy", "httpx"]
platforms = ["macosx_arm64", "macosx_x86_64", "win_amd64", "win_arm64"]

[[applications]]
name = "scipy-import"
versioned = true
launch_module = "launch_modules/scipy_import.py"
frameworks = ["scipy"]
requirements = ["scipy"]
platforms = ["linux_aarch64", "linux_x86_64"]
"""

# Hashes venvstacks 0.8 recorded for those layers in the sample project's committed
# `requirements/<env>/pylock.<env>.meta.json` files.
RECORDED = {
    "cpython-3.11": {
        "lock_input_hash": "34f67095a5c54ac8c79639119968ef8942844cfe4f4284ca586e243544b107be",
        "other_inputs_hash": "82fa53b197f46600eef5c06014ead098e19e722635f575804dc48aeca1e982a1",
        "version_inputs_hash": "44b4cd1d97e56b864c2ea2c41e99158b3bcbe6a2e6c6641cfef12bfdae06dbb1",
    },
    "framework-scipy": {
        "other_inputs_hash": "c4aa5ec33ef4d68a90d7de6fd1373840a66e17f037e4b5e313f991500137ea7b",
        "version_inputs_hash": "f1546ddc7223a15c3d815d30b11fccc3759ed61c6c44a1c294ebd16370d016d2",
    },
    "app-scipy-import": {
        "lock_input_hash": "b91780636b12da5ea37add0c8d2e659d47184fa8e70242f8d20b86e429afd6e2",
        "other_inputs_hash": "f1979da8937d8cf1eac917c0ed15b479f2509631748747640972df6cdab5cf25",
    },
    "app-scipy-client": {
        "lock_input_hash": "bd49f0f62084fbbb8e91811047978cf8f793339080131bb525e44e281bb3e582",
        "other_inputs_hash": "8236223df9fad6396ac2c159ac2f36e134d44c414129a609e4494fd33f04e029",
    },
}


def test_hashes_match_those_venvstacks_recorded_for_its_sample_project(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        SAMPLE_SPEC,
        {"launch_modules/scipy_client/__main__.py": "", "launch_modules/scipy_import.py": ""},
    )
    spec = load_spec(path)
    for env, recorded in RECORDED.items():
        layer = spec.layer(env)
        for key, value in recorded.items():
            if key == "lock_input_hash":
                assert vs.lock_input_hash(layer) == "sha256:" + value, (env, key)
            elif key == "other_inputs_hash":
                assert "sha256:" + value in vs.other_inputs_hashes(spec, layer), (env, key)
            else:
                assert "sha256:" + value in vs.version_inputs_hashes(layer), (env, key)
    # A change to what a hash covers changes it.
    other = load_spec(
        write_project(
            tmp_path / "other",
            SAMPLE_SPEC.replace("cpython@3.11.11", "cpython@3.12.9"),
            {"launch_modules/scipy_client/__main__.py": "", "launch_modules/scipy_import.py": ""},
        )
    )
    for env in ("cpython-3.11", "framework-scipy", "app-scipy-import"):
        want = "sha256:" + RECORDED[env]["other_inputs_hash"]
        assert want not in vs.other_inputs_hashes(other, other.layer(env)), env


def test_module_hash_matches_the_one_venvstacks_published(tmp_path: Path) -> None:
    # The sample project's support module `empty.py` (an empty file), as its
    # expected_manifests list it in `app_support_modules`.
    (tmp_path / "empty.py").write_bytes(b"")
    recorded = "sha256:f0db47066ec1e276e17579c221969006dde88da71e26bf5ddbfae356fa7c8fe7"
    assert vs.module_hash(tmp_path / "empty.py") == recorded
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("X = 1\n", encoding="utf-8")
    folder = vs.module_hash(tmp_path / "pkg")
    assert folder.startswith("sha256/")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert vs.module_hash(tmp_path / "pkg") == folder  # caches do not count
    (tmp_path / "pkg" / "__init__.py").write_text("X = 2\n", encoding="utf-8")
    assert vs.module_hash(tmp_path / "pkg") != folder


def test_content_hash_ignores_formatting_and_urls_but_not_packages() -> None:
    venvstacks_style = textwrap.dedent(
        """\
        # Locked requirements for fw (DO NOT EDIT)
        lock-version = "1.0"
        created-by = "uv"
        requires-python = "==3.12.*"

        [[packages]]
        name = "attrs"
        version = "25.3.0"
        index = "https://pypi.org/simple"

        [[packages.wheels]]
        url = "https://files.example/attrs-25.3.0-py3-none-any.whl"
        upload-time = 2025-03-13T11:10:21Z
        size = 63815

        [packages.wheels.hashes]
        sha256 = "abcd"

        [[packages]]
        name = "six"
        version = "1.17.0"
        marker = "(sys_platform == \\"win32\\") and sys_platform == 'from_lower_layer'"
        """
    )
    stacks_style = textwrap.dedent(
        """\
        lock-version = "1.0"
        created-by = "uv"

        [[packages]]
        name = "six"
        version = "1.17.0"
        marker = "sys_platform == 'win32' and sys_platform == 'from_lower_layer'"

        [[packages]]
        name = "attrs"
        version = "25.3.0"
        index = "https://pypi.org/simple"
        wheels = [{ name = "attrs-25.3.0-py3-none-any.whl", hashes = { sha256 = "abcd" } }]
        """
    )
    assert vs.content_hash(venvstacks_style) == vs.content_hash(stacks_style)
    by_hand = ["attrs==25.3.0 from https://pypi.org/simple"]
    by_hand += ["attrs-25.3.0-py3-none-any.whl:sha256:abcd"]
    by_hand += ["six==1.17.0 ; sys_platform == 'win32' from unspecified index"]
    assert vs.content_hash(stacks_style) == _hash_strings(sorted(by_hand))
    assert vs.content_hash(stacks_style.replace("25.3.0", "25.1.0")) != vs.content_hash(
        stacks_style
    )
    assert vs.content_hash(stacks_style.replace('"abcd"', '"abce"')) != vs.content_hash(
        stacks_style
    )


# ---------------------------------------------------------------- end to end

# Laid out like venvstacks' sample project: two runtimes (one versioned), a versioned
# framework, an unversioned one, a versioned app with a support module, a package app.
SPEC = f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11"
requirements = ["six"]

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
versioned = true
requirements = ["six"]

[[frameworks]]
name = "scipy"
versioned = true
runtime = "cpython-3.11"
requirements = ["idna"]

[[frameworks]]
name = "http-client"
runtime = "cpython-3.11"
requirements = ["attrs"]

[[frameworks]]
name = "sklearn"
runtime = "cpython-3.12"
requirements = ["idna"]

[[applications]]
name = "scipy-client"
launch_module = "launch_modules/scipy_client"
support_modules = ["support_modules/app_support.py"]
frameworks = ["scipy", "http-client"]
requirements = ["idna", "attrs"]

[[applications]]
name = "scipy-import"
versioned = true
launch_module = "launch_modules/scipy_import.py"
support_modules = ["support_modules/app_support.py"]
frameworks = ["scipy"]
requirements = ["idna"]

[[applications]]
name = "sklearn-import"
launch_module = "launch_modules/sklearn_import.py"
frameworks = ["sklearn"]
requirements = []
"""
MODULES = {
    "launch_modules/scipy_client/__init__.py": "",
    "launch_modules/scipy_client/__main__.py": "import attrs, idna, app_support\nprint('client')\n",
    "launch_modules/scipy_import.py": "import idna, app_support\nprint('import')\n",
    "launch_modules/sklearn_import.py": "import idna, six\nprint('sklearn')\n",
    "support_modules/app_support.py": "VALUE = 1\n",
}
# The lock history venvstacks left: the versions every versioned layer has reached.
HISTORY = {"cpython-3.12": 3, "framework-scipy": 5, "app-scipy-import": 2}
LOCKED_AT = "2025-05-06T13:02:25.857280+00:00"
DEPLOYED = {
    "cpython-3.11": "cpython-3.11",
    "cpython-3.12": "cpython-3.12@3",
    "framework-scipy": "framework-scipy@5",
    "framework-http-client": "framework-http-client",
    "framework-sklearn": "framework-sklearn",
    "app-scipy-client": "app-scipy-client",
    "app-scipy-import": "app-scipy-import@2",
    "app-sklearn-import": "app-sklearn-import",
}


def _hash_strings(items: list[str]) -> str:
    return "sha256:" + hashlib.sha256("".join(items).encode("utf-8")).hexdigest()


def _as_venvstacks_pylock(stacks_pylock: str, env: str) -> str:
    """The same packages written the way venvstacks writes a pylock (header, tables, URLs)."""
    data = tomllib.loads(stacks_pylock)
    lines = [
        f"# Locked requirements for {env} (DO NOT EDIT)",
        "#     Auto-generated by venvstacks with the following command:",
        "#         python -Im venvstacks lock",
        'lock-version = "1.0"',
        'created-by = "uv"',
        f"requires-python = {json.dumps(data.get('requires-python', ''))}",
    ]
    for package in data.get("packages", []):
        lines += ["", "[[packages]]", f'name = "{package["name"]}"']
        lines.append(f'version = "{package["version"]}"')
        if "marker" in package:
            lines.append(f"marker = {json.dumps(package['marker'])}")
        if "index" in package:
            lines.append(f'index = "{package["index"]}"')
        for wheel in package.get("wheels", []):
            name = wheel.get("name") or (wheel.get("url") or wheel["path"]).rsplit("/", 1)[-1]
            lines += ["", "[[packages.wheels]]"]
            lines.append(f'url = "{wheel.get("url") or "https://files.example/" + name}"')
            lines.append("upload-time = 2025-03-13T11:10:21Z")
            lines += [f"size = {wheel['size']}"] if "size" in wheel else []
            lines.append("")
            lines.append("[packages.wheels.hashes]")
            lines += [f'{algo} = "{value}"' for algo, value in wheel["hashes"].items()]
    return "\n".join(lines) + "\n"


def _package_hash(pylock_text: str) -> str:
    """venvstacks' requirements_hash, from its definition (independent of stacks' code)."""
    from packaging.markers import Marker

    shared = "sys_platform == 'from_lower_layer'"
    items = []
    for package in tomllib.loads(pylock_text).get("packages", []):
        marker = str(Marker(package["marker"])).replace('"', "'") if "marker" in package else ""
        if shared in marker:
            marker = marker.removeprefix("(").removesuffix(f" and {shared}").removesuffix(")")
            marker = "" if marker == shared else marker
        suffix = f" ; {marker}" if marker else ""
        items.append(
            f"{package['name']}=={package['version']}{suffix} from "
            f"{package.get('index', 'unspecified index')}"
        )
        for wheel in package.get("wheels", []):
            name = wheel["url"].rsplit("/", 1)[-1]
            items += [f"{name}:{algo}:{value}" for algo, value in wheel["hashes"].items()]
    return _hash_strings(sorted(items))


def _module_hash(path: Path) -> str:
    if path.is_file():
        content = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return _hash_strings([path.name, content])
    digest = hashlib.sha256()
    for folder in sorted([path, *[p for p in path.rglob("*") if p.is_dir()]]):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if files:
            digest.update(folder.name.encode())
        for file in files:
            digest.update(file.name.encode())
            digest.update(("sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()).encode())
    return "sha256/" + digest.hexdigest()


def _venvstacks_meta(project: Path, layer: dict[str, Any], pylock: str) -> dict[str, Any]:
    """pylock.<env>.meta.json as venvstacks 0.8 writes it for one layer of SPEC."""
    from packaging.requirements import Requirement

    env, xy = layer["env"], layer["xy"]
    other = [f"py_version={xy}"]
    if layer["kind"] == "runtime":
        other += ["linux_target=glibc@2.28", "macosx_target=13.0"]
    else:
        other += [layer["runtime"], *layer["frameworks"]]
    version = [f"env_name={env}", f"is_versioned_layer={env in HISTORY}"]
    version += [_module_hash(project / m) for m in layer.get("modules", [])]
    return {
        "lock_input_hash": _hash_strings(sorted(str(Requirement(r)) for r in layer["reqs"])),
        "lock_version": HISTORY.get(env, 1),
        "locked_at": LOCKED_AT,
        "other_inputs_hash": _hash_strings(other),
        "requirements_hash": _package_hash(pylock),
        "version_inputs_hash": _hash_strings(version),
    }


LAYERS = [
    {"env": "cpython-3.11", "kind": "runtime", "xy": "3.11", "reqs": ["six"]},
    {"env": "cpython-3.12", "kind": "runtime", "xy": "3.12", "reqs": ["six"]},
    {
        "env": "framework-scipy",
        "kind": "framework",
        "xy": "3.11",
        "reqs": ["idna"],
        "runtime": "cpython-3.11",
        "frameworks": [],
    },
    {
        "env": "framework-http-client",
        "kind": "framework",
        "xy": "3.11",
        "reqs": ["attrs"],
        "runtime": "cpython-3.11",
        "frameworks": [],
    },
    {
        "env": "framework-sklearn",
        "kind": "framework",
        "xy": "3.12",
        "reqs": ["idna"],
        "runtime": "cpython-3.12",
        "frameworks": [],
    },
    {
        "env": "app-scipy-client",
        "kind": "app",
        "xy": "3.11",
        "reqs": ["idna", "attrs"],
        "runtime": "cpython-3.11",
        "frameworks": ["scipy", "http-client"],
        "modules": ["launch_modules/scipy_client", "support_modules/app_support.py"],
    },
    {
        "env": "app-scipy-import",
        "kind": "app",
        "xy": "3.11",
        "reqs": ["idna"],
        "runtime": "cpython-3.11",
        "frameworks": ["scipy"],
        "modules": ["launch_modules/scipy_import.py", "support_modules/app_support.py"],
    },
    {
        "env": "app-sklearn-import",
        "kind": "app",
        "xy": "3.12",
        "reqs": [],
        "runtime": "cpython-3.12",
        "frameworks": ["sklearn"],
        "modules": ["launch_modules/sklearn_import.py"],
    },
]


def _lock_files(project: Path) -> dict[str, bytes]:
    folder = project / "requirements"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def venvstacks_project(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Path:
    """SPEC with real pylocks, rewritten as the lock files venvstacks leaves behind."""
    project = tmp_path_factory.mktemp("venvstacks-project")
    spec = write_project(project, SPEC, MODULES)
    stacks("lock", spec, "--json")
    for layer in LAYERS:
        folder = project / "requirements" / layer["env"]
        lock_name = layer["env"].replace(".", "_")
        pylock = _as_venvstacks_pylock(
            (folder / f"pylock.{lock_name}.toml").read_text(encoding="utf-8"), layer["env"]
        )
        for stale in folder.iterdir():
            stale.unlink()
        (folder / f"pylock.{lock_name}.toml").write_text(pylock, encoding="utf-8")
        meta = _venvstacks_meta(project, layer, pylock)
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (folder / f"pylock.{lock_name}.meta.json").write_text(text, encoding="utf-8")
    return spec


@pytest.mark.slow
def test_venvstacks_locks_are_valid_and_keep_their_versions(
    venvstacks_project: Path, tmp_path: Path
) -> None:
    from projects import copy_project

    spec = copy_project(venvstacks_project, tmp_path / "project")
    project = spec.parent
    loaded = load_spec(spec)
    for layer in loaded.layers:
        state = lock_state(loaded, layer, None)
        assert state.valid, (layer.env_name, state.reasons)
        assert read_lock_meta(loaded, layer).written_by == "venvstacks"  # type: ignore[union-attr]

    shown = stacks("show", spec, "--json").data
    targets = {
        entry["name"]: entry["install_target"]
        for kind in ("runtimes", "frameworks", "applications")
        for entry in shown[kind]
    }
    assert targets == DEPLOYED
    assert all(
        e["has_valid_lock"] for k in ("runtimes", "frameworks", "applications") for e in shown[k]
    )
    tree = stacks("show", spec).stdout
    assert "*" not in tree and "@???" not in tree
    assert "framework-scipy@5" in tree and "cpython-3.12@3" in tree

    before = _lock_files(project)
    ran = stacks("lock", spec, "--json")
    assert ran.ran("lock") == []
    assert _lock_files(project) == before  # nothing rewritten, not even the metadata

    # A relock that resolves the same packages keeps every version and lock time.
    relocked = stacks("lock", spec, "--reset-lock", "framework-scipy", "--json")
    assert "lock:framework-scipy" in relocked.ran("lock")
    scipy = read_lock_meta(loaded, loaded.layer("framework-scipy"))
    assert scipy is not None and scipy.written_by == "stacks"
    assert (scipy.lock_version, scipy.locked_at) == (5, LOCKED_AT)
    assert stacks("show", spec, "--json").data["frameworks"][0]["install_target"] == (
        "framework-scipy@5"
    )
    # The venvstacks locks above it are still valid: the packages below them are the same.
    above = lock_state(loaded, loaded.layer("app-scipy-import"), None)
    assert above.valid, above.reasons

    # New content: the version goes up by one, from the recorded one.
    spec.write_text(
        spec.read_text(encoding="utf-8").replace(
            'runtime = "cpython-3.11"\nrequirements = ["idna"]',
            'runtime = "cpython-3.11"\nrequirements = ["idna", "attrs"]',
        ),
        encoding="utf-8",
    )
    changed = load_spec(spec)
    assert not lock_state(changed, changed.layer("framework-scipy"), None).valid
    stacks("lock", spec, "--json")
    scipy = read_lock_meta(changed, changed.layer("framework-scipy"))
    assert scipy is not None and scipy.lock_version == 6 and scipy.locked_at != LOCKED_AT
    untouched = read_lock_meta(changed, changed.layer("cpython-3.12"))
    assert untouched is not None and untouched.written_by == "venvstacks"
    assert untouched.lock_version == 3
    app = read_lock_meta(changed, changed.layer("app-scipy-import"))
    assert app is not None and app.lock_version in (2, 3)
    for layer in changed.layers:
        assert lock_state(changed, layer, None).valid, layer.env_name
    # The published requirements_hash of a kept venvstacks lock is the one it recorded.
    assert (
        untouched.requirements_hash
        == json.loads(
            lock_paths(changed, changed.layer("cpython-3.12")).meta.read_text(encoding="utf-8")
        )["requirements_hash"]
    )


@pytest.mark.slow
def test_venvstacks_locks_publish_and_deploy_under_venvstacks_names(
    venvstacks_project: Path, tmp_path: Path
) -> None:
    from projects import copy_project

    spec = copy_project(venvstacks_project, tmp_path / "project")
    before = _lock_files(spec.parent)
    out = tmp_path / "out"
    stacks("publish", spec, "--output-dir", out, "--json")
    assert _lock_files(spec.parent) == before  # publishing relocked nothing
    manifest = json.loads((out / "__stacks__" / "stack.json").read_text("utf-8"))
    published = {
        entry["layer_name"]: entry
        for kind in ("runtimes", "frameworks", "applications")
        for entry in manifest["layers"][kind]
    }
    assert {name: entry["install_target"] for name, entry in published.items()} == DEPLOYED
    assert published["framework-scipy"]["lock_version"] == 5
    assert published["framework-scipy"]["locked_at"] == LOCKED_AT
    assert published["app-scipy-import"]["required_layers"] == ["framework-scipy@5"]
    assert published["framework-sklearn"]["runtime_layer"] == "cpython-3.12@3"
    assert published["cpython-3.12"]["archive_name"].startswith("cpython-3.12@3.")
    findings = stacks("verify", spec, "--output-dir", out, "--json").data["findings"]
    locks = {f["layer"]: f["status"] for f in findings if f["item"] == "lock"}
    assert locks == dict.fromkeys(DEPLOYED, "ok")
    target = tmp_path / "deployed"
    stacks("deploy", out, "--target", target)
    assert {p.name for p in target.iterdir() if not p.name.startswith(("_", "."))} >= set(
        DEPLOYED.values()
    )
    # A hand edit of a venvstacks pylock (another package version) is found by verify.
    pylock = spec.parent / "requirements" / "framework-scipy" / "pylock.framework-scipy.toml"
    text = pylock.read_text(encoding="utf-8")
    edited_text = re.sub(r'(name = "idna"\nversion = )"[^"]+"', r'\1"9.9"', text)
    assert edited_text != text
    pylock.write_text(edited_text)
    edited = stacks("verify", spec, "--output-dir", out, "--json", check=False)
    statuses = {f["layer"]: f["status"] for f in edited.data["findings"] if f["item"] == "lock"}
    assert edited.code == 1 and statuses["framework-scipy"] == "differs"
