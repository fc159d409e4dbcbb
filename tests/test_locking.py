"""Locking layers with real uv: against PyPI (small packages) and against local wheels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from stacks.errors import LockError
from stacks.lock.locking import LockState, lock_layer, lock_state
from stacks.lock.metadata import LockMeta, LockOptions, LockPaths, lock_paths, read_lock_meta
from stacks.lock.pylock import SHARED_MARKER, PlatformScope
from stacks.platforms import PLATFORMS, target_platform, wheel_supports
from stacks.spec import StackSpec, load_spec
from tests.wheels import build_wheel

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _python312() -> Path | None:
    candidates = [
        os.environ.get("STACKS_TEST_PYTHON312", ""),
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
        shutil.which("python3.12") or "",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


PYTHON = _python312()
pytestmark = pytest.mark.skipif(PYTHON is None, reason="needs a CPython 3.12 to lock with")

RUNTIME = """
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = {requirements}
"""


def runtime(*requirements: str, extra: str = "") -> str:
    """A runtime layer table."""
    return RUNTIME.format(requirements=json.dumps(list(requirements))) + extra


def framework(name: str, *requirements: str, extra: str = "") -> str:
    """A framework layer table on the runtime."""
    return (
        f'\n[[frameworks]]\nname = "{name}"\nruntime = "cpython-3.12"\n'
        f"requirements = {json.dumps(list(requirements))}\n{extra}"
    )


@dataclass
class Stack:
    """A spec file in a folder, its cache, and the options it is locked with."""

    spec_path: Path
    cache: Path
    options: LockOptions

    @property
    def spec(self) -> StackSpec:
        return load_spec(self.spec_path)

    def write(self, text: str) -> None:
        self.spec_path.write_text(textwrap.dedent(text), encoding="utf-8")

    def work_dir(self, env: str) -> Path:
        return self.cache / "locking" / env

    def lock(self, env: str | None = None, *, reset: bool = False) -> dict[str, LockMeta]:
        """Lock one layer, or every layer in order."""
        spec = self.spec
        layers = [spec.layer(env)] if env else list(spec.layers)
        assert PYTHON is not None
        return {
            layer.env_name: lock_layer(
                spec,
                layer,
                self.options,
                python=PYTHON,
                work_dir=self.work_dir(layer.env_name),
                reset=reset,
            )
            for layer in layers
        }

    def state(self, env: str, options: LockOptions | None = None) -> LockState:
        spec = self.spec
        return lock_state(spec, spec.layer(env), options or self.options)

    def paths(self, env: str) -> LockPaths:
        spec = self.spec
        return lock_paths(spec, spec.layer(env))

    def pylock(self, env: str) -> dict:
        return tomllib.loads(self.paths(env).pylock.read_text(encoding="utf-8"))

    def packages(self, env: str) -> dict[str, dict]:
        return {p["name"]: p for p in self.pylock(env)["packages"]}

    def files(self, env: str) -> dict[str, bytes]:
        folder = self.paths(env).folder
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    def generated(self, env: str, name: str = "pyproject.toml") -> dict:
        return tomllib.loads((self.work_dir(env) / name).read_text(encoding="utf-8"))


@pytest.fixture
def make_stack(tmp_path: Path) -> Callable[..., Stack]:
    """Write a spec (plus a launch module) into a fresh folder; return a Stack for it."""
    count = 0

    def make(text: str, options: LockOptions | None = None, folder: str | None = None) -> Stack:
        nonlocal count
        count += 1
        root = tmp_path / (folder or f"stack{count}")
        (root / "launch").mkdir(parents=True, exist_ok=True)
        (root / "launch" / "demo_app.py").write_text("print('hello')\n", encoding="utf-8")
        stack = Stack(root / "stack.toml", root / "cache", options or LockOptions())
        stack.write(text)
        return stack

    return make


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A folder of small local wheels: dep 1.0, tool 1.0 (needs dep), extra 1.0."""
    folder = tmp_path / "wheels"
    build_wheel(folder, "dep", "1.0")
    build_wheel(folder, "tool", "1.0", requires=["dep"])
    build_wheel(folder, "extra", "1.0")
    return folder


def local(wheels: Path, **changes: object) -> LockOptions:
    """Options that lock from local wheels only (no network)."""
    return replace(LockOptions(no_index=True, local_wheels=(wheels,)), **changes)  # type: ignore[arg-type]


QUIET = ["--quiet", "--no-config", "--no-python-downloads"]


def installed(pylock: Path, venv: Path) -> set[str]:
    """Names `uv pip install -r <pylock>` installs into a plain new venv."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    quiet = QUIET
    subprocess.run([uv, "venv", *quiet, "--python", str(PYTHON), str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [uv, "pip", "install", *quiet, "--python", python, "-r", str(pylock)], check=True
    )
    listing = subprocess.run(
        [uv, "pip", "list", "--no-config", "--python", python, "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return {entry["name"] for entry in json.loads(listing.stdout)}


APP = """
[[applications]]
name = "demo"
launch_module = "launch/demo_app.py"
frameworks = ["web"]
requirements = {requirements}
{extra}
"""


def app(*requirements: str, extra: str = "") -> str:
    return APP.format(requirements=json.dumps(list(requirements)), extra=extra)


# ---------------------------------------------------------------- a real stack from PyPI


def test_three_layer_stack_shares_lower_packages(make_stack, tmp_path: Path) -> None:
    stack = make_stack(
        runtime("six") + framework("web", "idna", "six") + app("attrs", "idna"),
    )
    metas = stack.lock()
    assert list(metas) == ["cpython-3.12", "framework-web", "app-demo"]
    for env in metas:
        assert stack.state(env) == LockState(True, (), metas[env])

    six = stack.packages("cpython-3.12")["six"]
    framework_packages = stack.packages("framework-web")
    assert framework_packages["six"] == {
        "name": "six",
        "version": six["version"],
        "marker": SHARED_MARKER,
        "tool": {"stacks": {"shared-from": "cpython-3.12"}},
    }
    assert framework_packages["idna"]["wheels"]
    app_packages = stack.packages("app-demo")
    assert set(app_packages) == {"attrs", "idna"}
    assert app_packages["idna"]["tool"] == {"stacks": {"shared-from": "framework-web"}}
    assert "wheels" not in app_packages["idna"]
    idna = framework_packages["idna"]["version"]

    # Constraints: the runtime's own pins, then the framework's own (its shared six skipped).
    assert stack.generated("framework-web")["tool"]["uv"]["constraint-dependencies"] == [
        f"six=={six['version']}"
    ]
    assert stack.generated("app-demo")["tool"]["uv"]["constraint-dependencies"] == [
        f"idna=={idna}",
        f"six=={six['version']}",
    ]

    summary = stack.paths("app-demo").summary.read_text(encoding="utf-8")
    assert f"attrs=={app_packages['attrs']['version']}\n" in summary
    assert summary.endswith(
        f"# Shared packages provided by lower layers\nidna=={idna}  # from framework-web\n"
    )
    text = stack.paths("app-demo").pylock.read_text(encoding="utf-8")
    assert str(tmp_path) not in text and "upload-time" not in text and "sdist" not in text

    # Installing a layer's lock installs only what the layer itself provides.
    assert installed(stack.paths("app-demo").pylock, tmp_path / "venv-app") == {"attrs"}
    assert installed(stack.paths("framework-web").pylock, tmp_path / "venv-fw") == {"idna"}


def test_one_uv_export_locks_exactly_as_uv_lock_then_export(make_stack, tmp_path: Path) -> None:
    """stacks locks and exports in one uv process: the same uv.lock and pylock as two commands."""
    from stacks.lock.uv_project import resolve, uv_project

    stack = make_stack(runtime("six") + framework("web", "idna", "six") + app("attrs", "idna"))
    stack.lock()
    spec = stack.spec
    layer = spec.layer("app-demo")
    constraints = stack.generated("app-demo")["tool"]["uv"]["constraint-dependencies"]
    project = uv_project(
        spec,
        layer,
        constraints=constraints,
        exclude_newer=None,
        index_url=None,
        no_index=False,
        local_wheels=(),
    )
    assert PYTHON is not None
    ours = resolve(
        project, work_dir=tmp_path / "one", python=PYTHON, env_name="app-demo", reset=False
    )
    assert not (tmp_path / "one" / "probe").exists()
    two = tmp_path / "two"
    two.mkdir()
    for name in ("pyproject.toml", "uv.toml"):
        shutil.copy2(tmp_path / "one" / name, two / name)
    from uv import find_uv_bin

    common = [f"--project={two}", f"--config-file={two / 'uv.toml'}", f"--python={PYTHON}"]
    common += ["--no-config", "--no-managed-python", "--no-python-downloads", "--quiet"]
    subprocess.run([find_uv_bin(), "lock", *common], check=True)
    export = ["export", "--frozen", "--format", "pylock.toml", "--no-header"]
    raw = subprocess.run(
        [find_uv_bin(), *export, "--no-emit-project", "--no-annotate", *common],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert ours == raw and "attrs" in raw
    assert (tmp_path / "one" / "uv.lock").read_bytes() == (two / "uv.lock").read_bytes()


def test_meta_file_follows_the_contract(make_stack) -> None:
    stack = make_stack(runtime("six") + framework("web", "idna"))
    metas = stack.lock()
    raw = stack.paths("framework-web").meta.read_text(encoding="utf-8")
    data = json.loads(raw)
    assert raw == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["lock_version"] == 1
    assert data["requirements_hash"].startswith("sha256:")
    for key in ("lock_hash", "lock_input_hash", "other_inputs_hash", "version_inputs_hash"):
        assert data[key].startswith("xxh3_128:")
    assert data["lower_locks"] == {"cpython-3.12": metas["cpython-3.12"].lock_hash}
    assert LockMeta.from_json(data) == metas["framework-web"]
    assert read_lock_meta(stack.spec, stack.spec.layer("framework-web")) == metas["framework-web"]


def test_locks_for_all_six_platforms_on_this_machine(make_stack) -> None:
    stack = make_stack(
        runtime("pyyaml", "tqdm")
        + """
[[runtimes]]
name = "cpython-linux"
python_implementation = "cpython@3.12"
requirements = ["pyyaml", "tqdm"]
platforms = ["linux_x86_64", "linux_aarch64"]
"""
    )
    stack.lock()
    lock = stack.pylock("cpython-3.12")
    assert len(lock["environments"]) == 6
    packages = stack.packages("cpython-3.12")
    for name in PLATFORMS:
        names = [w["name"] for w in packages["pyyaml"]["wheels"]]
        assert any(
            wheel_supports(n, target_platform(name), (2, 28), (13, 0), python="3.12") for n in names
        ), name
    scope = PlatformScope(PLATFORMS, "3.12")
    assert scope.applies(packages["colorama"]["marker"]) == (
        frozenset({"win_amd64", "win_arm64"}),
        True,
    )
    assert "marker" not in packages["pyyaml"] and "marker" not in packages["tqdm"]
    linux = stack.packages("cpython-linux")
    assert "colorama" not in linux and "marker" not in linux["pyyaml"]


def test_exclude_newer_gives_the_lock_time_and_reproducible_locks(make_stack) -> None:
    text = '[tool.uv]\nexclude-newer = "2023-01-01T00:00:00Z"\n' + runtime("attrs")
    first = make_stack(text)
    meta = first.lock()["cpython-3.12"]
    assert meta.locked_at == "2023-01-01T00:00:00+00:00"
    assert first.packages("cpython-3.12")["attrs"]["version"] == "22.2.0"
    second = make_stack(text)  # another folder, another cache: nothing to reuse
    second.lock()
    assert first.files("cpython-3.12") == second.files("cpython-3.12")

    older = LockOptions(exclude_newer="2022-06-01")
    assert first.state("cpython-3.12", older).reasons == (
        "exclude-newer changed: '2023-01-01T00:00:00Z' -> '2022-06-01'",
    )
    first.options = older
    meta = first.lock()["cpython-3.12"]
    assert (meta.locked_at, meta.lock_version) == ("2022-06-01T00:00:00+00:00", 2)
    assert first.packages("cpython-3.12")["attrs"]["version"] == "21.4.0"


# ---------------------------------------------------------------- incremental rules (local wheels)


def test_relocking_unchanged_inputs_changes_nothing(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    metas = stack.lock()
    before = {env: stack.files(env) for env in metas}
    stamps = {env: stack.paths(env).pylock.stat().st_mtime_ns for env in metas}
    for env in metas:
        assert stack.state(env).valid
    assert stack.lock() == metas
    shutil.rmtree(stack.cache)  # a fresh clone: no uv.lock to reuse
    assert stack.lock() == metas
    for env in metas:
        assert stack.files(env) == before[env]
        assert stack.paths(env).pylock.stat().st_mtime_ns == stamps[env]
    wheel = stack.packages("framework-web")["tool"]["wheels"][0]
    assert wheel["path"] == "../../../wheels/tool-1.0-py3-none-any.whl"


def test_changed_content_bumps_lock_version(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep"), local(wheels))
    first = stack.lock()["cpython-3.12"]
    stack.write(runtime("dep", "extra"))
    assert stack.state("cpython-3.12").reasons == ("requirements changed (added extra)",)
    second = stack.lock()["cpython-3.12"]
    assert second.lock_version == 2
    assert second.lock_hash != first.lock_hash
    assert second.locked_at >= first.locked_at
    assert stack.lock()["cpython-3.12"] == second


def edit_spec(old: str, new: str) -> Callable[[Stack], None]:
    def change(stack: Stack) -> None:
        stack.write(stack.spec_path.read_text(encoding="utf-8").replace(old, new))

    return change


def edit_pylock(env: str) -> Callable[[Stack], None]:
    def change(stack: Stack) -> None:
        path = stack.paths(env).pylock
        path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")

    return change


def delete(env: str, which: str) -> Callable[[Stack], None]:
    return lambda stack: getattr(stack.paths(env), which).unlink()


def relock_runtime_with_more(stack: Stack) -> None:
    edit_spec('requirements = ["dep"]', 'requirements = ["dep", "extra"]')(stack)
    stack.lock("cpython-3.12")


CHANGES = {
    "requirements": (
        edit_spec('["tool"]', '["tool", "extra"]'),
        {"framework-web": "requirements changed (added extra)"},
    ),
    "python": (
        edit_spec("cpython@3.12", "cpython@3.11"),
        {
            "cpython-3.12": "Python version changed: '3.12' -> '3.11'",
            "framework-web": "Python version changed: '3.12' -> '3.11'",
        },
    ),
    "platforms": (
        edit_spec(
            'runtime = "cpython-3.12"', 'runtime = "cpython-3.12"\nplatforms = ["win_amd64"]'
        ),
        {
            "framework-web": "platforms changed: [linux_x86_64, linux_aarch64, macosx_arm64, "
            "macosx_x86_64, win_amd64, win_arm64] -> [win_amd64]"
        },
    ),
    "linux_target": (
        edit_spec(
            'runtime = "cpython-3.12"', 'runtime = "cpython-3.12"\nlinux_target = "glibc@2.17"'
        ),
        {"framework-web": "linux_target changed: 'glibc@2.28' -> 'glibc@2.17'"},
    ),
    "lower lock content": (
        relock_runtime_with_more,
        {"framework-web": "the lock of lower layer 'cpython-3.12' changed"},
    ),
    "hand-edited pylock": (
        edit_pylock("framework-web"),
        {"framework-web": "pylock.framework-web.toml was edited by hand"},
    ),
    "deleted pylock": (
        delete("framework-web", "pylock"),
        {"framework-web": "pylock.framework-web.toml is missing"},
    ),
    "deleted lower pylock": (
        delete("cpython-3.12", "pylock"),
        {
            "cpython-3.12": "pylock.cpython-3_12.toml is missing",
            "framework-web": "lower layer 'cpython-3.12' is not locked",
        },
    ),
    "deleted meta": (
        delete("framework-web", "meta"),
        {"framework-web": "not locked yet"},
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_change_invalidates_the_right_locks(make_stack, wheels: Path, change: str) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    stack.lock()
    mutate, expected = CHANGES[change]
    mutate(stack)
    for env in ("cpython-3.12", "framework-web"):
        state = stack.state(env)
        if env in expected:
            assert not state.valid, env
            assert any(reason.startswith(expected[env]) for reason in state.reasons), state
        else:
            assert state == LockState(True, (), state.meta), env


def test_lock_options_are_lock_inputs(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep"), local(wheels))
    stack.lock()
    other = LockOptions(local_wheels=(wheels,))
    assert stack.state("cpython-3.12", other).reasons == ("no-index changed: on -> off",)
    moved = local(wheels.parent / "elsewhere")
    assert stack.state("cpython-3.12", moved).reasons == (
        "local wheel folders changed: [../wheels] -> [../elsewhere]",
    )


def test_without_given_options_each_layer_keeps_its_recorded_ones(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    first = stack.lock()
    unset = LockOptions(given=False)
    assert stack.state("framework-web", unset).valid
    # A relock with nothing given still resolves offline from the recorded wheel folder.
    stack.options = unset
    stack.write(
        stack.spec_path.read_text(encoding="utf-8").replace('["tool"]', '["tool", "extra"]')
    )
    meta = stack.lock("framework-web")["framework-web"]
    assert meta.lock_version == first["framework-web"].lock_version + 1
    assert meta.inputs["other"]["no_index"] is True
    assert meta.inputs["other"]["local_wheels"] == ["../wheels"]
    # Options given explicitly are compared as they are.
    assert not stack.state("framework-web", LockOptions()).valid


def test_versioned_layers_track_their_launch_module(make_stack, wheels: Path) -> None:
    text = runtime("dep") + framework("web", "tool") + app("extra", extra="versioned = true")
    text += app("extra").replace('"demo"', '"plain"')
    stack = make_stack(text, local(wheels))
    metas = stack.lock()
    (stack.spec_path.parent / "launch" / "demo_app.py").write_text("print('changed')\n")
    assert stack.state("app-demo").reasons == ("launch module changed",)
    assert stack.state("app-plain").valid  # unversioned: module content is not a lock input
    meta = stack.lock("app-demo")["app-demo"]
    assert meta.lock_version == metas["app-demo"].lock_version + 1
    assert meta.lock_hash == metas["app-demo"].lock_hash
    assert stack.state("app-demo").valid


def test_versioned_layers_follow_the_versions_of_lower_layers(make_stack, wheels: Path) -> None:
    """A versioned app on a versioned framework gets a new @N when the framework's does,
    even though its own lock content stays the same: app@N always runs on one framework."""
    text = runtime("dep") + framework("web", "tool", extra="versioned = true")
    text += app("extra", extra="versioned = true")
    text += app("extra").replace('"demo"', '"plain"')
    stack = make_stack(text, local(wheels))
    metas = stack.lock()
    build_wheel(wheels, "more", "1.0")  # a package the apps do not use
    stack.write(stack.spec_path.read_text(encoding="utf-8").replace('["tool"]', '["tool", "more"]'))
    assert stack.lock("framework-web")["framework-web"].lock_version == 2
    assert "versions of versioned lower layers changed: {'framework-web': 1} -> " in " ".join(
        stack.state("app-demo").reasons
    )
    after = stack.lock("app-demo")["app-demo"]
    assert after.lock_hash == metas["app-demo"].lock_hash
    assert after.lock_version == metas["app-demo"].lock_version + 1
    plain = stack.lock("app-plain")["app-plain"]  # unversioned: same content, same version
    assert plain.lock_version == metas["app-plain"].lock_version
    assert stack.lock("app-demo")["app-demo"] == after  # and nothing more after that


def test_reset_re_resolves_but_a_plain_relock_keeps_pins(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep"), local(wheels))
    stack.lock()
    build_wheel(wheels, "dep", "2.0")
    stack.lock()
    assert stack.packages("cpython-3.12")["dep"]["version"] == "1.0"
    shutil.rmtree(stack.cache)  # even without uv.lock, the committed pins are kept
    stack.lock()
    assert stack.packages("cpython-3.12")["dep"]["version"] == "1.0"
    meta = stack.lock(reset=True)["cpython-3.12"]
    assert stack.packages("cpython-3.12")["dep"]["version"] == "2.0"
    assert meta.lock_version == 2


# ---------------------------------------------------------------- failures


def test_refuses_to_lock_above_an_unlocked_layer(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    with pytest.raises(LockError) as caught:
        stack.lock("framework-web")
    message = str(caught.value)
    assert "'framework-web'" in message and "'cpython-3.12'" in message
    assert "stacks lock" in message and "--include cpython-3.12" in message
    assert not stack.paths("framework-web").folder.exists()


def test_conflict_within_a_layer_leaves_the_previous_lock(make_stack, wheels: Path) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    stack.lock()
    before = stack.files("framework-web")
    edit_spec('["tool"]', '["tool", "dep<1"]')(stack)
    with pytest.raises(LockError) as caught:
        stack.lock("framework-web")
    message = str(caught.value)
    assert message.startswith("cannot lock layer 'framework-web'")
    assert "dep<1" in message and "unsatisfiable" in message
    assert stack.files("framework-web") == before


def test_conflict_with_lower_pins_names_them(make_stack, wheels: Path) -> None:
    build_wheel(wheels, "dep", "2.0")
    stack = make_stack(runtime("dep==1.0") + framework("web", "dep"), local(wheels))
    stack.lock()
    assert stack.packages("framework-web")["dep"]["tool"]["stacks"]["shared-from"] == (
        "cpython-3.12"
    )
    before = stack.files("framework-web")
    edit_spec('["dep"]', '["dep>=2"]')(stack)
    with pytest.raises(LockError) as caught:
        stack.lock("framework-web")
    assert str(caught.value).startswith("cannot lock layer 'framework-web'")
    assert "dep>=2" in str(caught.value)
    assert caught.value.hint is not None and "lower layers pin dep==1.0" in caught.value.hint
    assert stack.files("framework-web") == before


@pytest.mark.parametrize("which", ["meta", "pylock"])
def test_a_folder_in_place_of_a_lock_file_names_the_layer(
    make_stack, wheels: Path, which: str
) -> None:
    stack = make_stack(runtime("dep") + framework("web", "tool"), local(wheels))
    stack.lock()
    in_the_way = getattr(stack.paths("framework-web"), which)
    in_the_way.unlink()
    in_the_way.mkdir()
    state = stack.state("framework-web")
    assert not state.valid
    assert state.reasons == (f"{in_the_way.name}: a folder where a lock file belongs",)
    assert stack.state("cpython-3.12").valid
    with pytest.raises(LockError) as caught:
        stack.lock("framework-web")
    assert str(caught.value).startswith("cannot lock layer 'framework-web': a folder is where")
    assert str(in_the_way) in caught.value.message
    assert caught.value.hint == f"remove the folder (`rm -r {in_the_way}`) and run again"
    in_the_way.rmdir()
    stack.lock("framework-web")
    assert stack.state("framework-web").valid


def test_uv_write_failures_name_the_folder_not_the_requirements(tmp_path: Path) -> None:
    from stacks.errors import DiskError
    from stacks.lock.uv_project import uv_write_failure

    cache = tmp_path / "uv-cache"
    # uv's words when it cannot write (28 and 30 as uv printed them for a full and a read-only
    # tmpfs cache in tests/test_faults_disk.py).
    outputs = {
        13: f"error: failed to create directory `{cache}/wheels-v5`: Permission denied (os error 13)",
        28: f"  cause: failed to write to file `{cache}/.tmpX/a.py`: No space left on device (os error 28)",
        30: f'  cause: Read-only file system (os error 30) at path "{cache}/.tmpB1CmvN"',
    }
    for code, output in outputs.items():
        found = uv_write_failure(
            output, doing="cannot lock layer 'x'", environ={"UV_CACHE_DIR": str(cache)}
        )
        assert isinstance(found, DiskError), code
        assert found.message.startswith(f"cannot lock layer 'x': uv could not write to {cache}/")
        assert f"(os error {code})" in found.message and "set by UV_CACHE_DIR" in found.message
        assert found.hint is not None and "UV_CACHE_DIR" in found.hint
        assert ("free some space" in found.hint) == (code == 28)
    # Outside uv's cache (e.g. the build folder): the folder, without blaming the cache.
    other = uv_write_failure(outputs[30], doing="d", environ={"UV_CACHE_DIR": str(tmp_path / "c")})
    assert other is not None and "uv's cache" not in other.message
    assert other.hint is not None and other.hint.startswith("make that folder writable")
    # Not a write failure: left to the resolution and network checks.
    assert uv_write_failure("error: No solution found when resolving", doing="d") is None
    assert uv_write_failure("No such file or directory (os error 2)", doing="d") is None


def test_missing_wheels_for_some_platforms_suggest_platforms(make_stack, wheels: Path) -> None:
    build_wheel(wheels, "native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64")
    stack = make_stack(runtime("dep") + framework("web", "native"), local(wheels))
    stack.lock("cpython-3.12")
    with pytest.raises(LockError) as caught:
        stack.lock("framework-web")
    message = str(caught.value)
    # uv itself finds no wheel for some environments; stacks names the package and each one.
    assert message.startswith("cannot lock layer 'framework-web': some packages have no wheel")
    assert (
        "native 1.0: no wheel for linux_aarch64, macosx_arm64, macosx_x86_64, win_amd64, "
        "win_arm64 (wheel platforms: manylinux_2_17_x86_64)"
    ) in message
    assert 'set platforms = ["linux_x86_64"]' in message
    assert not stack.paths("framework-web").folder.exists()
    edit_spec('runtime = "cpython-3.12"', 'runtime = "cpython-3.12"\nplatforms = ["linux_x86_64"]')(
        stack
    )
    stack.lock("framework-web")
    assert "marker" not in stack.packages("framework-web")["native"]


def test_uv_missing_wheel_phrases_are_recognised() -> None:
    from stacks.lock.uv_project import _MISSING_WHEELS, _WITHOUT_WHEELS

    # uv's words (0.8/0.9) for one version, for every version, and for a tag mismatch.
    said = [
        "Because native==1.0 has no `sys_platform == 'win32'`-compatible wheels and ...",
        "Because all versions of scipy have no `platform_machine == 'ARM64'`-compatible wheels",
        "Because dlltracer==1.0.3 has no wheels with a matching platform tag (e.g., `win_arm64`)",
    ]
    assert all(_MISSING_WHEELS.search(line) for line in said)
    assert [_WITHOUT_WHEELS.findall(line) for line in said] == [
        ["native"],
        ["scipy"],
        ["dlltracer"],
    ]
    assert not _MISSING_WHEELS.search("Because you require a<1 and a>=2, we can conclude ...")


def test_missing_wheels_are_named_per_package_and_platform_not_called_a_conflict(
    make_stack, wheels: Path
) -> None:
    # As venvstacks' sample project on win_arm64: several versions of a package, none with a
    # wheel for one target platform, and a second package with wheels for one platform only.
    for version in ("1.0", "2.0"):
        for tag in ("manylinux_2_17_x86_64", "win_amd64", "macosx_11_0_arm64"):
            build_wheel(wheels, "numeric", version, tag=f"cp312-cp312-{tag}")
    build_wheel(wheels, "tracer", "1.0", tag="cp312-cp312-win_amd64")
    targets = 'platforms = ["linux_x86_64", "win_amd64", "win_arm64"]\n'
    stack = make_stack(runtime("dep", extra=targets), local(wheels))
    stack.lock("cpython-3.12")
    stack.write(
        runtime("dep", extra=targets)
        + framework("sci", "numeric", "dep")
        + framework("trace", "tracer; sys_platform == 'win32'")
    )
    with pytest.raises(LockError) as caught:
        stack.lock("framework-sci")
    message, hint = caught.value.message, caught.value.hint or ""
    assert message.splitlines() == [
        "cannot lock layer 'framework-sci': some packages have no wheel for every target platform",
        "  numeric 2.0: no wheel for win_arm64 (wheel platforms: macosx_11_0_arm64, "
        "manylinux_2_17_x86_64, win_amd64)",
    ]
    assert (
        hint == 'set platforms = ["linux_x86_64", "win_amd64"] for layer \'framework-sci\', '
        "or provide the missing wheels"
    )
    assert "no solution" not in str(caught.value) and "relax" not in str(caught.value)
    with pytest.raises(LockError) as caught:
        stack.lock("framework-trace")
    assert caught.value.message.splitlines()[1:] == [
        "  tracer 1.0: no wheel for win_arm64 (wheel platforms: win_amd64)"
    ]
    assert caught.value.hint is not None and '["linux_x86_64", "win_amd64"]' in caught.value.hint
    # The suggested value works.
    stack.write(
        runtime("dep", extra=targets)
        + framework("sci", "numeric", "dep", extra='platforms = ["linux_x86_64", "win_amd64"]\n')
    )
    stack.lock("framework-sci")
    assert stack.packages("framework-sci")["numeric"]["version"] == "2.0"


def test_manylinux_newer_than_linux_target_is_refused(make_stack, wheels: Path) -> None:
    build_wheel(wheels, "native", "1.0", tag="cp312-cp312-manylinux_2_34_x86_64")
    linux = 'platforms = ["linux_x86_64"]\n'
    stack = make_stack(runtime("native", extra=linux), local(wheels))
    with pytest.raises(LockError) as caught:
        stack.lock()
    assert "native 1.0: no wheel for linux_x86_64" in str(caught.value)
    assert "no target platform has wheels" in str(caught.value)
    assert "linux_target to 'glibc@2.34'" in str(caught.value)
    assert not stack.paths("cpython-3.12").folder.exists()
    stack.write(runtime("native", extra=linux + 'linux_target = "glibc@2.34"\n'))
    stack.lock()
    assert stack.state("cpython-3.12").valid


# ---------------------------------------------------------------- indexes


def simple_index(root: Path, *wheel_files: Path) -> str:
    """A PEP 503 simple index in a folder, as a file:// URL."""
    root.mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[Path]] = {}
    for wheel in wheel_files:
        projects.setdefault(wheel.name.split("-")[0].replace("_", "-"), []).append(wheel)
    for project, files in projects.items():
        folder = root / project
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in files:
            shutil.copy(wheel, folder / wheel.name)
            links.append(f'<a href="{wheel.name}">{wheel.name}</a>')
        (folder / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    anchors = "".join(f'<a href="{p}/">{p}</a>' for p in sorted(projects))
    (root / "index.html").write_text("<html><body>" + anchors + "</body></html>")
    return root.as_uri()


def test_package_and_priority_indexes(make_stack, tmp_path: Path) -> None:
    made = tmp_path / "made"
    pinned = simple_index(tmp_path / "pinned", build_wheel(made / "a", "special", "1.0"))
    preferred = simple_index(
        tmp_path / "preferred",
        build_wheel(made / "b", "special", "2.0"),
        build_wheel(made / "b", "helper", "1.0"),
    )
    empty = simple_index(tmp_path / "default")  # stands in for PyPI: no network
    text = f"""
        [tool.uv]
        index = [
            {{ name = "pinned", url = "{pinned}", explicit = true }},
            {{ name = "preferred", url = "{preferred}", explicit = true }},
        ]

        [[runtimes]]
        name = "cpython-3.12"
        python_implementation = "cpython@3.12"
        requirements = ["special"]
        package_indexes = {{ special = "pinned" }}

        [[frameworks]]
        name = "web"
        runtime = "cpython-3.12"
        requirements = ["helper"]
        priority_indexes = ["preferred"]
    """
    stack = make_stack(text, LockOptions(index_url=empty))
    stack.lock()

    runtime_uv = stack.generated("cpython-3.12")["tool"]["uv"]
    assert [i["name"] for i in runtime_uv["index"]] == ["pinned", "preferred"]
    assert runtime_uv["sources"] == {"special": {"index": "pinned"}}
    framework_uv = stack.generated("framework-web")["tool"]["uv"]
    assert framework_uv["index"] == [
        {"name": "preferred", "url": preferred, "explicit": False},
        {"name": "pinned", "url": pinned, "explicit": True},
    ]
    assert framework_uv["sources"] == {"special": {"index": "pinned"}}  # inherited
    assert stack.generated("framework-web", "uv.toml")["index"] == framework_uv["index"]

    special = stack.packages("cpython-3.12")["special"]
    assert special["version"] == "1.0" and "index" not in special
    assert special["wheels"][0]["path"] == "../../../pinned/special/special-1.0-py3-none-any.whl"
    assert stack.packages("framework-web")["helper"]["version"] == "1.0"
    assert "file:" not in stack.paths("framework-web").pylock.read_text(encoding="utf-8")


def installed_for_windows(pylock: Path, target: Path) -> set[str]:
    """Names `uv pip install -r <pylock>` installs for win_amd64 (into a --target folder)."""
    from uv import find_uv_bin

    command = [find_uv_bin(), "pip", "install", *QUIET, "--python", str(PYTHON)]
    command += ["--python-platform", "x86_64-pc-windows-msvc", "--target", str(target)]
    subprocess.run([*command, "-r", str(pylock)], check=True)
    return {p.name.split("-")[0] for p in target.glob("*.dist-info")}


def test_a_package_shared_on_some_platforms_installs_only_where_it_is_own(
    make_stack, wheels: Path, tmp_path: Path
) -> None:
    stack = make_stack(
        runtime("dep==1.0 ; sys_platform == 'win32'") + framework("web", "dep==1.0", "tool"),
        local(wheels),
    )
    stack.lock()
    entries = [p for p in stack.pylock("framework-web")["packages"] if p["name"] == "dep"]
    assert [("tool" in p, "wheels" in p) for p in entries] == [(True, False), (False, True)]
    pylock = stack.paths("framework-web").pylock
    assert installed(pylock, tmp_path / "venv") == {"dep", "tool"}
    assert installed_for_windows(pylock, tmp_path / "windows") == {"tool"}
    summary = stack.paths("framework-web").summary.read_text(encoding="utf-8")
    assert summary.count("dep==1.0 ; ") == 2  # once as its own, once as shared (windows)


def test_other_uv_settings_pass_through(make_stack, wheels: Path) -> None:
    build_wheel(wheels, "dep", "2.0")
    settings = '[tool.uv]\noverride-dependencies = ["dep==2.0"]\nprerelease = "allow"\n'
    stack = make_stack(settings + runtime("dep==1.0", "tool"), local(wheels))
    stack.lock()
    assert stack.packages("cpython-3.12")["dep"]["version"] == "2.0"
    assert stack.generated("cpython-3.12")["tool"]["uv"]["override-dependencies"] == ["dep==2.0"]
    config = stack.generated("cpython-3.12", "uv.toml")
    assert config["prerelease"] == "allow" and config["no-build"] is True
    assert config["no-index"] is True and config["find-links"] == [str(wheels)]
