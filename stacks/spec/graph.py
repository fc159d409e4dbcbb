"""Across layers: references, C3 order, platforms, inherited package indexes, folder names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stacks.platforms import PLATFORMS
from stacks.spec.fields import LayerDraft, parse_macosx
from stacks.spec.linearise import OrderExplainer, c3_merge
from stacks.spec.model import LayerKind
from stacks.spec.report import SpecReport, did_you_mean, show, toml_key, toml_string

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
        self._by_env: dict[str, LayerDraft] = {}

    def resolve(self, drafts: list[LayerDraft]) -> dict[str, ResolvedLayer]:
        """Resolve each layer against those below it: runtime, C3 order, platforms, indexes."""
        resolved: dict[str, ResolvedLayer] = {}
        kept = [d for d in drafts if d.kept]
        self._by_env = {d.env_name: d for d in kept}
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
        lower: list[LayerDraft] = []  # the frameworks it names, in its order
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
            linearised = self._linearise(draft, lower, resolved)
            if linearised is None:
                return None
        # Each layer's platforms are within those of everything below it (asking for more is
        # an error), so the layers it names directly and its runtime are enough to intersect:
        # that keeps a deep stack linear.
        direct = [*(f.env_name for f in lower), runtime_env]
        available = set(PLATFORMS)
        for dep in direct:
            available &= set(resolved[dep].platforms)
        # Below a layer with invalid platforms, what is available is not known.
        complete = all(resolved[dep].platforms_complete for dep in direct)
        if draft.platforms is None:
            platforms = tuple(p for p in PLATFORMS if p in available)
            if not platforms and all(resolved[dep].platforms for dep in direct):
                self._warn_no_common_platform(draft, direct, resolved)
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
        indexes, overrides, unresolved = self._merge_indexes(draft, direct, resolved)
        return ResolvedLayer(
            runtime_env,
            linearised,
            platforms,
            indexes,
            overrides,
            unresolved,
            platforms_complete=complete and draft.platforms_complete,
        )

    def _linearise(
        self, draft: LayerDraft, lower: list[LayerDraft], resolved: dict[str, ResolvedLayer]
    ) -> tuple[str, ...] | None:
        """The C3 order of the frameworks below `draft` (None after reporting why there is none)."""
        if len(lower) == 1:  # one framework: its own order with it on top, no merge needed
            return (lower[0].env_name, *resolved[lower[0].env_name].linearised)
        sequences = [[f.env_name, *resolved[f.env_name].linearised] for f in lower]
        sequences.append([f.env_name for f in lower])
        merged = c3_merge(sequences)
        if isinstance(merged, list):
            return tuple(merged)
        explainer = OrderExplainer(
            [f.env_name for f in lower], lambda env: resolved[env].linearised, self._declared
        )
        message, hint = explainer.explain(sequences, merged)
        self.report.problem(draft.env_name, "frameworks", message, hint)
        return None

    def _declared(self, env_name: str) -> list[str]:
        """The env names of the frameworks a layer lists, in its order."""
        draft = self._by_env.get(env_name)
        refs = draft.framework_refs if draft is not None else None
        return [LayerKind.FRAMEWORK.prefix + ref for ref in refs or ()]

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
        self, draft: LayerDraft, direct: list[str], resolved: dict[str, ResolvedLayer]
    ) -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
        """Merge the package_indexes of the layers right below with this layer's own, checking clashes.

        Each layer below already carries the merged pins of everything under it, so only the
        layers a layer names (and its runtime) are merged here. They are taken as venvstacks
        takes them: the runtime first, then the frameworks in the order listed; a later pin
        replaces an earlier one, and the layer's own pin replaces them all. Each replacement
        of one index by another must be accepted by an `index_overrides` entry
        `{replaced = "replacement"}` (from this layer or any layer below; a chain of entries
        leading to the replacement counts). Returns the merged pins, the overrides in force
        and the packages whose clash is left unresolved.
        """
        overrides: dict[str, str] = {}
        for dep in direct:
            overrides.update(resolved[dep].overrides)
        overrides.update(draft.index_overrides)
        inherited: dict[str, list[str]] = {}
        reported_below: set[str] = set()
        for dep in [direct[-1], *direct[:-1]]:
            reported_below.update(resolved[dep].unresolved)
            for package, index in resolved[dep].package_indexes.items():
                seen = inherited.setdefault(package, [])
                if index in seen:
                    seen.remove(index)  # seen again later: it is the later pin that counts
                seen.append(index)
        merged = dict(draft.package_indexes)
        wanted: dict[str, str] = {}
        reversed_entries: dict[str, str] = {}
        unresolved: set[str] = set()
        reported: list[str] = []
        own_pin_clashes = False  # a clash involving this layer's own package_indexes
        for package, indexes in inherited.items():
            own = merged.get(package)
            winner = own if own is not None else indexes[-1]
            merged[package] = winner
            missing = {
                i: winner for i in indexes if i != winner and not _leads_to(overrides, i, winner)
            }
            if not missing:
                continue
            unresolved.add(package)
            if own is None and package in reported_below:
                continue  # the layer below that first mixed these indexes reports it
            wanted.update(missing)
            reported.append(package)
            own_pin_clashes = own_pin_clashes or own is not None
            for replaced in missing:
                if overrides.get(winner) == replaced:
                    reversed_entries[winner] = replaced
        if wanted:
            kept = {k: v for k, v in draft.index_overrides.items() if k not in reversed_entries}
            table = {**kept, **dict(sorted(wanted.items()))}
            entries = ", ".join(f"{toml_key(k)} = {toml_string(v)}" for k, v in table.items())
            message = f"inconsistent package index override(s) for {', '.join(sorted(reported))}"
            if reversed_entries:
                backwards = ", ".join(
                    f"{toml_key(k)} = {toml_string(v)}" for k, v in reversed_entries.items()
                )
                message += (
                    f" ({{{backwards}}} is the wrong way round: the key is the index replaced,"
                    " the value the index used)"
                )
            # The fix goes in index_overrides; blame package_indexes only if the layer's own
            # pin is part of the clash (changing that pin is then another fix).
            self.report.problem(
                draft.env_name,
                "package_indexes" if own_pin_clashes else "index_overrides",
                message,
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


def _leads_to(overrides: Mapping[str, str], index: str, target: str) -> bool:
    """Whether following `index_overrides` from `index` reaches `target`."""
    seen = {index}
    while index in overrides:
        index = overrides[index]
        if index == target:
            return True
        if index in seen:
            return False
        seen.add(index)
    return False
