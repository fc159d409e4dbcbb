"""Across layers: references, C3 order, platforms, inherited package indexes, folder names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stacks.platforms import PLATFORMS
from stacks.spec.fields import LayerDraft, parse_macosx
from stacks.spec.model import LayerKind
from stacks.spec.report import SpecReport, did_you_mean, show

# What only Windows forbids: these characters, a trailing space or dot, device names.
_WINDOWS_BAD_CHARS = re.compile(r'[:*?"<>|]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)]
)


@dataclass
class ResolvedLayer:
    """Cross-layer facts about one draft."""

    runtime: str
    linearised: tuple[str, ...]
    platforms: tuple[str, ...]
    package_indexes: dict[str, str]
    overrides: dict[str, str]
    unresolved: frozenset[str] = frozenset()  # packages with an index clash reported here
    platforms_complete: bool = True  # False: platforms of this layer or below were invalid


class LayerGraph:
    """Resolves the layer drafts of a spec against each other, reporting every problem."""

    def __init__(self, report: SpecReport, dropped: dict[LayerKind, set[str]]) -> None:
        self.report = report
        # Names of layers left out after a problem of their own: references to them are
        # not reported again as unknown.
        self.dropped = dropped

    def resolve(self, drafts: list[LayerDraft]) -> dict[str, ResolvedLayer]:
        """Resolve each layer against those below it: runtime, C3 order, platforms, indexes."""
        resolved: dict[str, ResolvedLayer] = {}
        kept = [d for d in drafts if d.kept]
        runtimes = {d.name: d for d in kept if d.kind is LayerKind.RUNTIME}
        frameworks_seen: dict[str, LayerDraft] = {}
        all_frameworks = {d.name for d in kept if d.kind is LayerKind.FRAMEWORK}
        for draft in drafts:
            if draft.kind is LayerKind.RUNTIME:
                platforms = draft.platforms if draft.platforms is not None else PLATFORMS
                if not draft.broken:
                    resolved[draft.env_name] = ResolvedLayer(
                        draft.env_name,
                        (),
                        platforms,
                        dict(draft.package_indexes),
                        dict(draft.index_overrides),
                        platforms_complete=draft.platforms_complete,
                    )
                continue
            info = self._resolve_layered(draft, runtimes, frameworks_seen, all_frameworks, resolved)
            if info is not None:
                resolved[draft.env_name] = info
            if draft.kind is LayerKind.FRAMEWORK and draft.kept:
                frameworks_seen[draft.name] = draft
        return resolved

    def _resolve_layered(
        self,
        draft: LayerDraft,
        runtimes: dict[str, LayerDraft],
        frameworks_seen: dict[str, LayerDraft],
        all_frameworks: set[str],
        resolved: dict[str, ResolvedLayer],
    ) -> ResolvedLayer | None:
        env = draft.env_name
        if draft.runtime_ref is not None:
            runtime = runtimes.get(draft.runtime_ref)
            if runtime is None:
                if draft.runtime_ref in self.dropped[LayerKind.RUNTIME]:
                    return None  # that runtime's own problem is reported already
                hint = (
                    did_you_mean(draft.runtime_ref, runtimes)
                    or f"known runtimes: {', '.join(runtimes) or 'none'}"
                )
                self.report.problem(env, "runtime", f"unknown runtime '{draft.runtime_ref}'", hint)
                return None
            if draft.broken or runtime.env_name not in resolved:
                return None
            runtime_env, linearised = runtime.env_name, ()
        else:
            lower: list[LayerDraft] = []
            ok = not draft.broken
            for ref in draft.framework_refs or ():
                if ref in frameworks_seen:
                    lower.append(frameworks_seen[ref])
                    continue
                ok = False
                if ref in self.dropped[LayerKind.FRAMEWORK]:
                    continue  # that framework's own problem is reported already
                if ref in all_frameworks:
                    reason = f"unknown framework '{ref}': it is defined later in the file (or depends on this layer)"
                    hint = "a layer may only refer to layers defined earlier in the file"
                else:
                    reason = f"unknown framework '{ref}'"
                    hint = (
                        did_you_mean(ref, all_frameworks)
                        or f"known frameworks: {', '.join(sorted(all_frameworks)) or 'none'}"
                    )
                self.report.problem(env, "frameworks", reason, hint)
            if not ok or any(f.env_name not in resolved for f in lower):
                return None
            runtime_envs = {resolved[f.env_name].runtime for f in lower}
            if len(runtime_envs) > 1:
                detail = "; ".join(
                    f"'{f.name}' requires runtime '{resolved[f.env_name].runtime}'" for f in lower
                )
                self.report.problem(
                    env,
                    "frameworks",
                    f"references inconsistent frameworks: {detail}",
                    "all frameworks of a layer must share one runtime",
                )
                return None
            runtime_env = runtime_envs.pop()
            merged = _c3_merge(
                [[f.env_name, *resolved[f.env_name].linearised] for f in lower]
                + [[f.env_name for f in lower]]
            )
            if isinstance(merged, _C3Conflict):
                bare = len(LayerKind.FRAMEWORK.prefix)
                remaining = ", ".join(str([n[bare:] for n in seq]) for seq in merged.remaining)
                self.report.problem(
                    env,
                    "frameworks",
                    f"dependency linearization failed (remaining sequences: [{remaining}])",
                    "list the frameworks in an order consistent with how the layers below list them",
                )
                return None
            linearised = tuple(merged)
        below = [*linearised, runtime_env]
        available = set(PLATFORMS)
        for dep in below:
            available &= set(resolved[dep].platforms)
        # Below a layer with invalid platforms, what is available is not known.
        complete = all(resolved[dep].platforms_complete for dep in below)
        if draft.platforms is None:
            platforms = tuple(p for p in PLATFORMS if p in available)
            if not platforms and all(resolved[dep].platforms for dep in below):
                self._warn_no_common_platform(draft, below, resolved)
        else:
            extra = [p for p in draft.platforms if p not in available]
            if extra and complete:
                supported = ", ".join(p for p in PLATFORMS if p in available) or "none"
                self.report.problem(
                    env,
                    "platforms",
                    f"specifies target platforms not supported by lower layers ({', '.join(extra)})",
                    f"lower layers support: {supported}",
                )
            platforms = draft.platforms
        indexes, overrides, unresolved = self._merge_indexes(draft, below, resolved)
        return ResolvedLayer(
            runtime_env,
            linearised,
            platforms,
            indexes,
            overrides,
            unresolved,
            platforms_complete=complete and draft.platforms_complete,
        )

    def _warn_no_common_platform(
        self, draft: LayerDraft, below: list[str], resolved: dict[str, ResolvedLayer]
    ) -> None:
        """A layer whose enabled lower layers share no platform is disabled: say so."""
        listed = "; ".join(
            f"{dep}: {', '.join(resolved[dep].platforms)}"
            if set(resolved[dep].platforms) != set(PLATFORMS)
            else f"{dep}: all"
            for dep in below
        )
        self.report.warn(
            f"layer '{draft.env_name}' is disabled: its lower layers have no"
            f" platform in common ({listed})\n  hint: set `platforms` on the lower layers so"
            " they share one, or `platforms = []` on this layer to disable it on purpose"
        )

    def _merge_indexes(
        self, draft: LayerDraft, below: list[str], resolved: dict[str, ResolvedLayer]
    ) -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
        """Merge the package_indexes pinned below with this layer's own, checking clashes.

        The layer's own pin wins over inherited ones. Otherwise inherited pins that
        disagree need an `index_overrides` entry (`{replaced = "replacement"}`, from this
        layer or any layer below); the replacement is the index used. Clashes are looked
        for as venvstacks does (the runtime first, then the frameworks in sys.path order),
        so its specs and hints mean the same here. Returns the merged pins, the overrides
        in force and the packages whose clash is left unresolved.
        """
        overrides: dict[str, str] = {}
        for dep in below:
            overrides.update(resolved[dep].overrides)
        overrides.update(draft.index_overrides)
        inherited: dict[str, list[str]] = {}
        reported_below: set[str] = set()
        for dep in [below[-1], *below[:-1]]:
            reported_below.update(resolved[dep].unresolved)
            for package, index in resolved[dep].package_indexes.items():
                seen = inherited.setdefault(package, [])
                if index not in seen:
                    seen.append(index)
        merged = dict(draft.package_indexes)
        wanted: dict[str, str] = {}
        unresolved: set[str] = set()
        reported: list[str] = []
        own_pin_clashes = False  # a clash involving this layer's own package_indexes
        for package, indexes in inherited.items():
            own = merged.get(package)
            if own is None and len(indexes) == 1:
                merged[package] = indexes[0]
                continue
            if own is not None:
                winner = own
            else:
                accepted = [
                    w for w in indexes if all(overrides.get(i) == w for i in indexes if i != w)
                ]
                winner = accepted[0] if accepted else indexes[-1]
                merged[package] = winner
            missing = {i: winner for i in indexes if i != winner and overrides.get(i) != winner}
            if not missing:
                continue
            unresolved.add(package)
            if own is None and package in reported_below:
                continue  # the layer below that first mixed these indexes reports it
            wanted.update(missing)
            reported.append(package)
            own_pin_clashes = own_pin_clashes or own is not None
        if wanted:
            table = {**draft.index_overrides, **dict(sorted(wanted.items()))}
            entries = ", ".join(f"{_toml_key(k)} = {_toml_string(v)}" for k, v in table.items())
            # The fix goes in index_overrides; blame package_indexes only if the layer's own
            # pin is part of the clash (changing that pin is then another fix).
            self.report.problem(
                draft.env_name,
                "package_indexes" if own_pin_clashes else "index_overrides",
                f"inconsistent package index override(s) for {', '.join(sorted(reported))}",
                f"specify 'index_overrides = {{{entries}}}' to accept",
            )
        return merged, overrides, frozenset(unresolved)

    def check_macosx_default(
        self,
        drafts: list[LayerDraft],
        resolved: dict[str, ResolvedLayer],
        environ: Mapping[str, str],
    ) -> None:
        """A malformed $MACOSX_DEPLOYMENT_TARGET is a problem only for the macOS layers it sets."""
        value = environ.get("MACOSX_DEPLOYMENT_TARGET")
        if not value or parse_macosx(value) is not None:
            return
        users = [
            draft.env_name
            for draft in drafts
            if draft.macosx_default
            and any(p.startswith("macosx") for p in _targets(draft, resolved))
        ]
        if users:
            self.report.problem(
                None,
                "MACOSX_DEPLOYMENT_TARGET (environment)",
                f"must be 'X' or 'X.Y', not {show(value)}",
                "it is the macosx_target of " + ", ".join(users) + ": fix or unset the"
                " environment variable, or set macosx_target on those layers",
            )

    def check_windows_names(
        self, drafts: list[LayerDraft], resolved: dict[str, ResolvedLayer]
    ) -> None:
        """Layers built for Windows need env names Windows can use as folder names."""
        for draft in drafts:
            windows = [p for p in _targets(draft, resolved) if p.startswith("win")]
            reason = _windows_name_problem(draft.env_name) if draft.kept else None
            if windows and reason:
                self.report.problem(
                    draft.env_name,
                    "name",
                    f"{show(draft.name)} cannot be a folder name on Windows ({reason})",
                    "rename the layer, or give it `platforms` without " + " and ".join(windows),
                )


def _targets(draft: LayerDraft, resolved: dict[str, ResolvedLayer]) -> Sequence[str]:
    """The platforms a layer targets, as far as they are known (a broken layer: its own list)."""
    if draft.env_name in resolved:
        return resolved[draft.env_name].platforms
    if draft.kind is LayerKind.RUNTIME and draft.platforms is None:
        return PLATFORMS
    return draft.platforms or ()


def _windows_name_problem(env_name: str) -> str | None:
    """Why Windows cannot create a folder with this name, if it cannot."""
    bad = _WINDOWS_BAD_CHARS.search(env_name)
    if bad:
        return f'it contains {bad.group()!r}; Windows forbids any of : * ? " < > |'
    if env_name.endswith((" ", ".")):
        return "it ends with a space or a dot"
    if env_name.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "it is a reserved device name"
    return None


def _toml_key(key: str) -> str:
    """`key` as written in a TOML table: bare if it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class _C3Conflict:
    remaining: list[list[str]]


def _c3_merge(sequences: list[list[str]]) -> list[str] | _C3Conflict:
    """Merge sequences with the C3 rule (Python's MRO algorithm)."""
    seqs = [list(s) for s in sequences if s]
    result: list[str] = []
    while seqs:
        for seq in seqs:
            head = seq[0]
            if not any(head in other[1:] for other in seqs):
                break
        else:
            return _C3Conflict(seqs)
        result.append(head)
        seqs = [[item for item in s if item != head] for s in seqs]
        seqs = [s for s in seqs if s]
    return result
