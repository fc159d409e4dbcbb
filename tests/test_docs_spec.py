"""docs/spec.md: it names every field, setting and rule the spec loader knows, and its example loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from stackrun import REPO

from stacks.lock.uv_project import _IGNORED_KEYS
from stacks.platforms import PLATFORMS
from stacks.spec import load_spec
from stacks.spec.layers import _COMMON_FIELDS, _KIND_FIELDS, MIN_PYTHON
from stacks.spec.model import ARCHIVE_SUFFIXES, RUNTIME_SOURCES, UNSUPPORTED_SUFFIXES
from stacks.spec.settings import _TOOL_STACKS_FIELDS

DOC = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "name",
    sorted(
        {
            *_COMMON_FIELDS,
            *(field for fields in _KIND_FIELDS.values() for field in fields),
            *_TOOL_STACKS_FIELDS,
            *PLATFORMS,
            *RUNTIME_SOURCES,
            *ARCHIVE_SUFFIXES,
            *UNSUPPORTED_SUFFIXES,
            *_IGNORED_KEYS,
        }
    ),
)
def test_the_reference_names_every_field_setting_and_value(name: str) -> None:
    assert re.search(rf"`[^`]*{re.escape(name)}[^`]*`", DOC), f"docs/spec.md never names {name}"


def test_the_reference_states_the_oldest_python() -> None:
    words = " ".join(DOC.split())
    assert f"the version must be {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer" in words


def test_the_complete_example_loads(tmp_path: Path) -> None:
    example = re.findall(r"```toml\n(.*?)```", DOC.split("## A complete example")[1], re.S)[0]
    (tmp_path / "launch" / "viewer").mkdir(parents=True)
    (tmp_path / "launch" / "viewer" / "__main__.py").write_text("")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "helpers.py").write_text("")
    (tmp_path / "stack.toml").write_text(example)
    spec = load_spec(tmp_path / "stack.toml")
    assert spec.warnings == ()
    app = spec.layer("app-viewer")
    assert app.dependencies == ("framework-torch", "framework-plots", "cpython-3.12")
    assert app.platforms == ("linux_x86_64",)


def test_the_readme_points_to_the_reference_in_the_project() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/spec.md)" in readme
    assert "../shared" not in readme and "../shared" not in DOC
