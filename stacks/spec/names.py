"""What layer names become on disk: the file-name limit, and names that look like versions."""

from __future__ import annotations

import re

from stacks.platforms import PLATFORMS
from stacks.spec.fields import LayerDraft
from stacks.spec.model import LayerKind
from stacks.spec.report import SpecReport, show

# The longest file-name component a name becomes: an archive's temporary file while it is
# written, `.<env>@<lock version>-<platform>.<format>.<8 random>.tmp` (lock files, stamps and
# build folders are shorter). File systems allow 255 bytes per component.
NAME_MAX = 255
_LONGEST_PLATFORM = max(PLATFORMS, key=len)


def longest_derived_name(env_name: str) -> str:
    """The longest file or folder name stacks makes from a layer's env name."""
    return f".{env_name}@{'9' * 10}-{_LONGEST_PLATFORM}.tar.zst.XXXXXXXX.tmp"


_VERSION_SUFFIX = re.compile(r"(.+)@([0-9]+)")  # what `<env>@<lock version>` looks like


def name_too_long(report: SpecReport, kind: LayerKind, label: str, name: str) -> bool:
    """Report (and say) whether a layer name makes a file name longer than NAME_MAX bytes."""
    size = len(name.encode("utf-8", "surrogatepass"))
    longest = longest_derived_name(kind.prefix + name)
    extra = len(longest.encode("utf-8", "surrogatepass")) - size
    if size + extra <= NAME_MAX:
        return False
    report.problem(
        label,
        "name",
        f"{show(name)} is too long ({size} bytes): file names made from it, such as"
        f" {show(longest)}, would exceed the {NAME_MAX}-byte limit of file systems",
        f"use a {kind.value} name of at most {NAME_MAX - extra} bytes (UTF-8)",
    )
    return True


def warn_version_lookalikes(report: SpecReport, drafts: list[LayerDraft]) -> None:
    """Warn about a name like `x@3` beside a versioned `x`: they can deploy to one folder.

    '@' is allowed in names (as in venvstacks); only this case is ambiguous, because a
    versioned layer deploys as `<env>@<lock version>`.
    """
    versioned = {d.env_name for d in drafts if d.kept and d.versioned}
    for draft in drafts:
        match = _VERSION_SUFFIX.fullmatch(draft.env_name) if draft.kept else None
        if match and match.group(1) in versioned:
            report.warn(
                f"layer '{draft.env_name}' has the folder name versioned layer"
                f" '{match.group(1)}' deploys as at lock version {match.group(2)}: the two"
                " would overwrite each other in one deployment"
                "\n  hint: rename one of them (or make the other layer unversioned)"
            )
