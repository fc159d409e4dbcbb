"""What a spec may not do to stacks: wrong files, huge values, names too long; C3 and index rules."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stacks.errors import SpecError
from stacks.spec import load_spec
from stacks.spec.document import MAX_SPEC_BYTES

RUNTIME = """
[[runtimes]]
name = "rt"
python_implementation = "cpython@3.12"
requirements = []
"""


def problems_of(path: Path) -> list[tuple[str | None, str | None, str, str | None]]:
    """(layer, field, message, hint) of each problem the spec at `path` reports."""
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    assert caught.value.exit_code == 2
    return [(p.layer, p.field, p.message, p.hint) for p in caught.value.problems]


# ---------------------------------------------------------------- what is read


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO as the spec is an error at once (reading it would wait for a writer forever)."""
    fifo = tmp_path / "stack.toml"
    os.mkfifo(fifo)
    began = time.monotonic()
    ((layer, fld, message, hint),) = problems_of(fifo)
    assert time.monotonic() - began < 5
    assert (layer, fld) == (None, None)
    assert message == "is not a regular file (a pipe, socket or device)"
    assert hint == "save the spec to a file and pass its path"


def test_a_device_is_refused(tmp_path: Path) -> None:
    """/dev/zero would fill memory: a device is refused before anything is read."""
    ((_, _, message, _),) = problems_of(Path("/dev/zero"))
    assert message.startswith("is not a regular file")


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    """A spec file larger than 16 MiB is refused, naming the path and the cap."""
    big = tmp_path / "stack.toml"
    with big.open("wb") as handle:
        handle.truncate(MAX_SPEC_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SpecError) as caught:
        load_spec(big, environ={})
    (problem,) = caught.value.problems
    assert problem.file == str(big)
    assert problem.message == "is larger than 16 MiB, the most a spec file may be"
    assert f"{big}: is larger than 16 MiB" in str(caught.value)


def test_a_file_at_the_size_cap_is_read(tmp_path: Path) -> None:
    """Exactly 16 MiB is still read (here: a comment padding a valid spec)."""
    spec = tmp_path / "stack.toml"
    text = RUNTIME + "#"
    spec.write_text(text + "x" * (MAX_SPEC_BYTES - len(text)) + "", encoding="utf-8")
    assert spec.stat().st_size == MAX_SPEC_BYTES
    assert [layer.env_name for layer in load_spec(spec, environ={}).layers] == ["rt"]


def test_a_folder_and_a_missing_file_are_still_told_apart(tmp_path: Path) -> None:
    """The non-blocking open keeps the old messages for a folder and a missing file."""
    assert problems_of(tmp_path)[0][2] == "is a folder, not a spec file"
    assert problems_of(tmp_path / "nope.toml")[0][2] == "spec file not found"


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (
            f'python_implementation = "cpython@3.{"1" * 5000}"',
            "python_implementation",
            "has a number of more than 6 digits",
        ),
        (
            f'macosx_target = "{"1" * 5000}"',
            "macosx_target",
            "must be 'X' or 'X.Y'",
        ),
        (f"macosx_target = 0x{'f' * 4000}", "macosx_target", "<an integer of 16000 bits>"),
        (
            f'linux_target = "glibc@2.{"1" * 5000}"',
            "linux_target",
            "Linux libc version must be of the form 'X.Y'",
        ),
        (
            f'requirements = ["six=={"1" * 5000}"]',
            "requirements",
            "has a number of more than 18 digits",
        ),
        (f"versioned = 0b{'1' * 20000}", "versioned", "<an integer of 20000 bits>"),
    ],
)
def test_huge_numbers_are_spec_errors(
    write_spec: Callable[..., Path], line: str, field: str, message: str
) -> None:
    """Numbers too big to be real (or for Python to print) are reported, naming the field."""
    text = RUNTIME.replace('python_implementation = "cpython@3.12"\n', "")
    if not line.startswith("python_implementation"):
        text += 'python_implementation = "cpython@3.12"\n'
    text = text.replace("requirements = []\n", "") if field == "requirements" else text
    path = write_spec(text + line + "\n")
    reported = problems_of(path)
    assert [(layer, fld) for layer, fld, _, _ in reported] == [("rt", field)]
    assert message in reported[0][2]


def test_a_toml_integer_too_long_for_python_is_a_spec_error(
    write_spec: Callable[..., Path],
) -> None:
    """tomllib cannot convert a 5000-digit integer: that is a spec error, not a traceback."""
    path = write_spec(RUNTIME + f"versioned = {'1' * 5000}\n")
    ((_, _, message, hint),) = problems_of(path)
    assert message.startswith("TOML value error: Exceeds the limit (4300 digits)")
    assert hint == "no spec field takes a number that long: shorten it (or quote it)"


# ---------------------------------------------------------------- names and file-name limits


@pytest.mark.parametrize(
    ("table", "prefix", "room"),
    [("runtimes", "", 208), ("frameworks", "framework-", 198), ("applications", "app-", 204)],
)
def test_names_must_leave_room_for_what_is_made_from_them(
    write_spec: Callable[..., Path], table: str, prefix: str, room: int
) -> None:
    """The longest file name made from a layer name (an archive's temporary file) must fit
    255 bytes: at the limit it loads, one byte more is an error naming the field."""
    launch = write_spec("print('hi')\n", name="launch/app.py")

    def spec_with(name: str) -> Path:
        layers = {
            "runtimes": f'[[runtimes]]\nname = "{name}"\npython_implementation = "cpython@3.12"\n'
            "requirements = []\n",
            "frameworks": RUNTIME + f'[[frameworks]]\nname = "{name}"\nruntime = "rt"\n'
            "requirements = []\n",
            "applications": RUNTIME + f'[[applications]]\nname = "{name}"\nruntime = "rt"\n'
            f'requirements = []\nlaunch_module = "{launch.relative_to(launch.parent.parent)}"\n',
        }
        return write_spec(layers[table])

    fits = load_spec(spec_with("n" * room), environ={})
    assert prefix + "n" * room in [layer.env_name for layer in fits.layers]
    ((layer, fld, message, hint),) = problems_of(spec_with("n" * (room + 1)))
    assert (layer, fld) == (f"{table}[0]", "name")
    assert f"is too long ({room + 1} bytes)" in message
    assert "255-byte limit of file systems" in message
    assert hint == f"use a {table[:-1]} name of at most {room} bytes (UTF-8)"


def test_name_length_counts_utf8_bytes(write_spec: Callable[..., Path]) -> None:
    """'é' is two bytes in a file name: 105 of them do not fit where 208 ASCII letters do."""
    path = write_spec(
        f'[[runtimes]]\nname = "{"é" * 105}"\npython_implementation = "cpython@3.12"\n'
        "requirements = []\n"
    )
    ((_, _, message, _),) = problems_of(path)
    assert "is too long (210 bytes)" in message


def test_a_megabyte_name_is_a_spec_error_and_not_echoed_whole(
    write_spec: Callable[..., Path],
) -> None:
    """A 1 MB name exits 2 (not 1 from a later OSError) and the message stays short."""
    path = write_spec(
        f'[[runtimes]]\nname = "{"x" * 1_000_000}"\npython_implementation = "cpython@3.12"\n'
        "requirements = []\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    assert caught.value.exit_code == 2
    assert len(str(caught.value)) < 1000


# ---------------------------------------------------------------- C3: who disagrees


def test_c3_conflict_names_the_frameworks_that_disagree(write_spec: Callable[..., Path]) -> None:
    """An app on `ab` (one, two) and `ba` (two, one): both orders are named, and a fix."""
    path = write_spec(
        RUNTIME
        + """
[[frameworks]]
name = "one"
runtime = "rt"
requirements = []

[[frameworks]]
name = "two"
runtime = "rt"
requirements = []

[[frameworks]]
name = "ab"
frameworks = ["one", "two"]
requirements = []

[[frameworks]]
name = "ba"
frameworks = ["two", "one"]
requirements = []

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["ab", "ba"]
requirements = []
"""
    )
    (path.parent / "app.py").write_text("")
    ((layer, fld, message, hint),) = problems_of(path)
    assert (layer, fld) == ("app-app", "frameworks")
    assert message == (
        "dependency linearization failed: the frameworks below cannot be put in one sys.path"
        " order: 'ab' puts 'one' before 'two' (it lists frameworks = [\"one\", \"two\"]);"
        " but 'ba' puts 'two' before 'one' (it lists frameworks = [\"two\", \"one\"])"
    )
    assert hint == (
        'make the frameworks below agree on one order, e.g. in \'ba\': frameworks = ["one", "two"]'
    )


def test_c3_conflict_with_the_layers_own_list_suggests_the_order_that_works(
    write_spec: Callable[..., Path],
) -> None:
    """Listing a framework before one that sits on it: the order that would work is given."""
    path = write_spec(
        RUNTIME
        + """
[[frameworks]]
name = "base"
runtime = "rt"
requirements = []

[[frameworks]]
name = "mid"
frameworks = ["base"]
requirements = []

[[frameworks]]
name = "top"
frameworks = ["base", "mid"]
requirements = []
"""
    )
    ((layer, _, message, hint),) = problems_of(path)
    assert layer == "framework-top"
    assert "this layer lists 'base' before 'mid' (frameworks = [\"base\", \"mid\"])" in message
    assert "'mid' sits on 'base'" in message
    assert hint == 'list them in an order that agrees: frameworks = ["mid", "base"]'


def test_c3_conflict_found_deeper_names_the_layer_that_set_the_order(
    write_spec: Callable[..., Path],
) -> None:
    """When the clashing order comes from further down, the layer that listed it is named."""
    path = write_spec(
        RUNTIME
        + """
[[frameworks]]
name = "one"
runtime = "rt"
requirements = []

[[frameworks]]
name = "two"
runtime = "rt"
requirements = []

[[frameworks]]
name = "ab"
frameworks = ["one", "two"]
requirements = []

[[frameworks]]
name = "above-ab"
frameworks = ["ab"]
requirements = []

[[frameworks]]
name = "ba"
frameworks = ["two", "one"]
requirements = []

[[frameworks]]
name = "both"
frameworks = ["above-ab", "ba"]
requirements = []
"""
    )
    ((_, _, message, hint),) = problems_of(path)
    assert "'ab' puts 'one' before 'two' (through 'above-ab')" in message
    assert "'ba' puts 'two' before 'one'" in message
    assert hint.endswith('in \'ba\': frameworks = ["one", "two"]')


def test_c3_conflict_of_three_reads_as_a_round_of_orders(tmp_path: Path) -> None:
    """x before y (a), y before z (b), z before x (c): all three named, in a round, and the
    last one's swap suggested."""
    spec = tmp_path / "stack.toml"
    layers = [RUNTIME]
    for name in ("x", "y", "z"):
        layers.append(f'[[frameworks]]\nname = "{name}"\nruntime = "rt"\nrequirements = []\n')
    for name, on in (
        ("a", '"x", "y"'),
        ("b", '"y", "z"'),
        ("c", '"z", "x"'),
        ("top", '"a", "b", "c"'),
    ):
        layers.append(f'[[frameworks]]\nname = "{name}"\nframeworks = [{on}]\nrequirements = []\n')
    spec.write_text("\n".join(layers), encoding="utf-8")
    ((layer, _, message, hint),) = problems_of(spec)
    assert layer == "framework-top"
    assert message.endswith(
        "'a' puts 'x' before 'y' (it lists frameworks = [\"x\", \"y\"]); 'b' puts 'y' before"
        " 'z' (it lists frameworks = [\"y\", \"z\"]); but 'c' puts 'z' before 'x' (it lists"
        ' frameworks = ["z", "x"])'
    )
    assert (
        hint
        == 'make the frameworks below agree on one order, e.g. in \'c\': frameworks = ["x", "z"]'
    )


# ---------------------------------------------------------------- index_overrides direction


INDEXES = """
[[tool.uv.index]]
name = "cpu"
url = "https://download.pytorch.org/whl/cpu"

[[tool.uv.index]]
name = "cu"
url = "https://download.pytorch.org/whl/cu128"

[[tool.uv.index]]
name = "rocm"
url = "https://download.pytorch.org/whl/rocm"
"""


def _two_pins(overrides: str, order: str = '"on-cpu", "on-cu"') -> str:
    return (
        INDEXES
        + RUNTIME
        + f"""
[[frameworks]]
name = "on-cpu"
runtime = "rt"
requirements = []
package_indexes = {{ torch = "cpu" }}

[[frameworks]]
name = "on-cu"
runtime = "rt"
requirements = []
package_indexes = {{ torch = "cu" }}

[[frameworks]]
name = "both"
frameworks = [{order}]
requirements = []
index_overrides = {overrides}
"""
    )


def test_the_later_pin_replaces_the_earlier_as_venvstacks_has_it(
    write_spec: Callable[..., Path],
) -> None:
    """{earlier = later} is accepted and the later index is the one used."""
    spec = load_spec(write_spec(_two_pins('{ cpu = "cu" }')), environ={})
    assert dict(spec.layer("framework-both").package_indexes) == {"torch": "cu"}
    flipped = load_spec(write_spec(_two_pins('{ cu = "cpu" }', '"on-cu", "on-cpu"')), environ={})
    assert dict(flipped.layer("framework-both").package_indexes) == {"torch": "cpu"}


def test_the_reverse_override_is_rejected_with_the_right_one(
    write_spec: Callable[..., Path],
) -> None:
    """{later = earlier} does not accept the clash: it is named, and the right entry hinted."""
    ((layer, fld, message, hint),) = problems_of(write_spec(_two_pins('{ cu = "cpu" }')))
    assert (layer, fld) == ("framework-both", "index_overrides")
    assert message == (
        'inconsistent package index override(s) for torch ({cu = "cpu"} is the wrong way'
        " round: the key is the index replaced, the value the index used)"
    )
    assert hint == "specify 'index_overrides = {cpu = \"cu\"}' to accept"


def test_a_chain_of_overrides_reaches_the_index_used(write_spec: Callable[..., Path]) -> None:
    """cpu -> rocm -> cu accepts cpu being replaced by cu."""
    spec = load_spec(write_spec(_two_pins('{ cpu = "rocm", rocm = "cu" }')), environ={})
    assert dict(spec.layer("framework-both").package_indexes) == {"torch": "cu"}


# ---------------------------------------------------------------- a deep stack, end to end


def test_show_of_a_3000_deep_chain_stays_small(tmp_path: Path) -> None:
    """3,000 frameworks in a chain: `stacks show` stays under 200 MB (was 948 MB, and 246 s)."""
    lines = [RUNTIME]
    for i in range(3000):
        on = 'runtime = "rt"' if i == 0 else f'frameworks = ["f{i - 1}"]'
        lines.append(f'[[frameworks]]\nname = "f{i}"\n{on}\nrequirements = []\n')
    spec = tmp_path / "deep.toml"
    spec.write_text("\n".join(lines), encoding="utf-8")
    # Its time is measured by `make bench` (scale-graph), not asserted here: the peak memory
    # is what grew with depth (948 MB before, about 72 MB now) and does not depend on load.
    # A fresh, small interpreter starts it: Linux keeps a forked child's pre-exec peak in its
    # ru_maxrss, and a forked pytest is hundreds of MB by now.
    measure = (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "_, status, usage = os.wait4(child.pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "stacks", "show", str(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    code, peak_kib = map(int, done.stdout.split())
    assert code == 0
    assert peak_kib < 200 * 1024


@pytest.mark.slow
def test_names_at_the_limit_lock_publish_export_and_deploy(tmp_path: Path) -> None:
    """Versioned layers with the longest names allowed go through every step (tagged .tar.zst
    archives, whose temporary files are the longest names made) and their app runs."""
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "app.py").write_text("print('ran at the limit')\n")
    runtime, framework, app = "r" * 208, "f" * 198, "a" * 204
    spec = tmp_path / "stack.toml"
    spec.write_text(
        f"""[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "{runtime}"
python_implementation = "cpython@3.12"
requirements = []
versioned = true

[[frameworks]]
name = "{framework}"
runtime = "{runtime}"
requirements = []
versioned = true

[[applications]]
name = "{app}"
frameworks = ["{framework}"]
launch_module = "launch/app.py"
requirements = []
versioned = true
""",
        encoding="utf-8",
    )

    def stacks(*args: str | Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "stacks", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    stacks("publish", spec, "--tag-outputs", "--format", "tar.zst")
    stacks("export", spec)
    stacks("deploy", tmp_path / "_artifacts", "--target", tmp_path / "deployed")
    (deployed_app,) = (tmp_path / "deployed").glob("app-*")
    assert deployed_app.name == f"app-{app}@1"
    ran = subprocess.run(
        [deployed_app / "bin" / "python", "-m", "app"], capture_output=True, text=True
    )
    assert (ran.returncode, ran.stdout) == (0, "ran at the limit\n")
