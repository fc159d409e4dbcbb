"""What building one layer needs: the layer, its lock, its runtime and the layers below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stacks.spec import LayerSpec

METADATA_FILE = Path("share/venv/metadata/venvstacks_layer.json")
DYNLIB_DIR = Path("share/venv/dynlib")


@dataclass(frozen=True)
class LowerLayer:
    """A layer below the one being built: its names and where its build is."""

    env_name: str
    deployed_name: str
    build_dir: Path
    pylock: Path


@dataclass(frozen=True)
class BuildRequest:
    """Everything needed to build one layer environment."""

    layer: LayerSpec
    target: Path  # the build folder to (re)create
    pylock: Path
    python_version: str  # full X.Y.Z of the runtime
    deployed_name: str
    lower: tuple[LowerLayer, ...]  # sys.path order, runtime last (empty for a runtime)
    runtime_source: Path | None = None  # runtime layers: the provisioned runtime to copy
    platform: str = "linux_x86_64"
    verified_files: Path | None = None  # the project's record of files already checked
    # A forced rebuild (--clean, a fix verify prints): every installed file is hashed, the
    # record is not trusted (it knows files by inode, size and mtime, which an in-place
    # edit can keep).
    recheck_installed: bool = False
    known_digests: Path | None = None  # the project's record of file hashes (hashing.KnownDigests)
    # The provided runtime's interpreter: uv installs into the stage with it (`--prefix`), so
    # its query of the interpreter is cached (a stage's own launcher is new every build).
    installer_python: Path | None = None

    @property
    def python_xy(self) -> str:
        """The runtime's X.Y."""
        return ".".join(self.python_version.split(".")[:2])

    @property
    def site_dir(self) -> str:
        """The site-packages folder, relative to a layer folder."""
        return f"lib/python{self.python_xy}/site-packages"
