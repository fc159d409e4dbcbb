"""The sys.path order of a layer's frameworks (C3, as Python's MRO), and why there is none."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stacks.spec.model import LayerKind
from stacks.spec.report import toml_list


@dataclass
class C3Conflict:
    """Where a C3 merge got stuck: the sequences left, each with where it came from."""

    remaining: list[list[str]]
    origins: list[int]  # for each remaining sequence, the index of the sequence it is left of


def c3_merge(sequences: Sequence[Sequence[str]]) -> list[str] | C3Conflict:
    """Merge sequences with the C3 rule (Python's MRO algorithm), in time linear in their length.

    Instead of scanning every sequence's tail for each candidate head, it keeps a count of
    the tails each name is in; a head is free when its count is zero.
    """
    seqs = [s for s in sequences if s]
    origins = [i for i, s in enumerate(sequences) if s]
    position = [0] * len(seqs)
    in_tails: dict[str, int] = {}
    for seq in seqs:
        for name in seq[1:]:
            in_tails[name] = in_tails.get(name, 0) + 1
    active = list(range(len(seqs)))
    result: list[str] = []
    while active:
        for i in active:
            head = seqs[i][position[i]]
            if not in_tails.get(head):
                break
        else:
            return C3Conflict(
                [list(seqs[i][position[i] :]) for i in active], [origins[i] for i in active]
            )
        result.append(head)
        still = []
        for i in active:
            seq = seqs[i]
            if seq[position[i]] == head:
                position[i] += 1
                if position[i] < len(seq):
                    in_tails[seq[position[i]]] -= 1  # the new head has left this tail
            if position[i] < len(seq):
                still.append(i)
        active = still
    return result


def _bare(env_name: str) -> str:
    """A framework's name as the spec writes it (its env name without 'framework-')."""
    return env_name.removeprefix(LayerKind.FRAMEWORK.prefix)


class OrderExplainer:
    """Says which layers put a layer's frameworks in orders C3 cannot merge, and what would work."""

    def __init__(
        self,
        lower: list[str],
        below: Callable[[str], tuple[str, ...]],
        declared: Callable[[str], list[str]],
    ) -> None:
        self.lower = lower  # the env names of the frameworks the layer lists, in its order
        self.below = below  # a framework's own C3 order of the frameworks under it
        self.declared = declared  # the env names of the frameworks a layer lists

    def explain(self, sequences: list[list[str]], conflict: C3Conflict) -> tuple[str, str]:
        """Which layers put the frameworks in orders that cannot be merged, and what would work."""
        remaining = conflict.remaining
        # Each head is blocked by a sequence that has it further back: follow the blocks
        # from the first head until they go round, which is the disagreement.
        blocker: dict[int, int] = {}
        for j, seq in enumerate(remaining):
            blocker[j] = next(k for k, other in enumerate(remaining) if seq[0] in other[1:])
        j, visited = 0, []
        while j not in visited:
            visited.append(j)
            j = blocker[j]
        cycle = visited[visited.index(j) :]
        orders = []  # (sequence number, the name it puts first, the name it puts after)
        for j in reversed(cycle):  # the blocks lead backwards: reversed, each order leads on
            k = blocker[j]
            orders.append((conflict.origins[k], remaining[k][0], remaining[j][0]))
        start = orders.index(min(orders))  # begin with the first framework listed
        orders = orders[start:] + orders[:start]
        reasons = [self._order_reason(origin, a, b) for origin, a, b in orders]
        message = (
            "dependency linearization failed: the frameworks below cannot be put in one"
            " sys.path order: " + "; ".join(reasons[:-1]) + "; but " + reasons[-1]
        )
        without_own = c3_merge(sequences[:-1])
        if isinstance(without_own, list):
            declared = set(self.lower)
            order = [_bare(n) for n in without_own if n in declared]
            hint = f"list them in an order that agrees: frameworks = {toml_list(order)}"
        else:
            hint = self._reorder_hint(orders)
        return message, hint

    def _declaring_layer(self, top: str, first: str, second: str) -> str:
        """The lowest layer at or below `top` whose order already has `first` before `second`."""
        for name in reversed((top, *self.below(top))):
            below = (name, *self.below(name))
            if first in below and second in below:
                return name
        return top

    def _order_reason(self, origin: int, first: str, second: str) -> str:
        """Why sequence number `origin` puts `first` before `second`, in the spec's words."""
        if origin == len(self.lower):
            names = [_bare(n) for n in self.lower]
            return (
                f"this layer lists '{_bare(first)}' before '{_bare(second)}'"
                f" (frameworks = {toml_list(names)})"
            )
        top = self.lower[origin]
        layer = self._declaring_layer(top, first, second)
        via = "" if layer == top else f" (through '{_bare(top)}')"
        if layer == first:
            return f"'{_bare(first)}' sits on '{_bare(second)}'{via}"
        listed = toml_list([_bare(n) for n in self.declared(layer)])
        return (
            f"'{_bare(layer)}' puts '{_bare(first)}' before '{_bare(second)}'{via}"
            f" (it lists frameworks = {listed})"
        )

    def _reorder_hint(self, orders: list[tuple[int, str, str]]) -> str:
        """How to make two frameworks below agree: swap the pair in the list of one of them."""
        for origin, first, second in reversed(orders):  # change the later-listed one
            if origin == len(self.lower):
                continue
            layer = self._declaring_layer(self.lower[origin], first, second)
            declared = self.declared(layer)
            if layer == first or first not in declared or second not in declared:
                continue
            swapped = [second if n == first else first if n == second else n for n in declared]
            return (
                f"make the frameworks below agree on one order, e.g. in '{_bare(layer)}':"
                f" frameworks = {toml_list([_bare(n) for n in swapped])}"
            )
        return "list the frameworks in an order consistent with how the layers below list them"
