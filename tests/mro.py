"""The framework order a stack spec must give each layer, computed by Python's own MRO."""

from __future__ import annotations

from typing import Any


def mro_orders(document: dict[str, Any]) -> dict[str, list[str]]:
    """Env names of the frameworks below each layer of a parsed spec, in Python's MRO order.

    Every runtime becomes a class, every framework a class whose bases are the
    classes of its `frameworks` (or of its runtime); an application's order is the
    MRO of a class made the same way. Raises TypeError where Python finds no MRO.
    """
    classes: dict[str, type] = {
        rt["name"]: type(f"runtime-{rt['name']}", (), {}) for rt in document.get("runtimes", [])
    }
    frameworks: dict[str, type] = {}
    orders: dict[str, list[str]] = {}
    for table, prefix in (("frameworks", "framework-"), ("applications", "app-")):
        for entry in document.get(table, []):
            if "runtime" in entry:
                bases: tuple[type, ...] = (classes[entry["runtime"]],)
            else:
                bases = tuple(frameworks[name] for name in entry["frameworks"])
            made = type(prefix + entry["name"], bases, {})
            orders[prefix + entry["name"]] = [
                cls.__name__ for cls in made.__mro__[1:] if cls.__name__.startswith("framework-")
            ]
            if table == "frameworks":
                frameworks[entry["name"]] = made
    return orders
