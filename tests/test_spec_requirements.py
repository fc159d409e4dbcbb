"""The spec's fast path for plain requirements gives exactly packaging's normalised form."""

from __future__ import annotations

import itertools
import random

from packaging.requirements import InvalidRequirement, Requirement

from stacks.spec.fields import simple_requirement

NAMES = ["attrs", "Idna", "zope.interface", "typing_extensions", "a", "x-1", "a_", "_a", "9lives"]
OPERATORS = ["==", "!=", "<=", ">=", "<", ">", "~=", "===", "=", "=<"]
VERSIONS = ["1", "1.0", "23.1", "01.002", "1.0.0", "1.0a1", "1.*", "1.0+local", "0", "1..0", ""]
SPACES = ["", " ", "  ", "\t"]


def packaging_form(text: str) -> str | None:
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return None
    return str(requirement)


def candidates() -> list[str]:
    found = set(NAMES)
    for name, op, version, space in itertools.product(NAMES[:3], OPERATORS, VERSIONS, SPACES):
        found.add(f"{name}{space}{op}{space}{version}")
    rng = random.Random(17)
    for _ in range(3000):
        parts = [
            f"{rng.choice(SPACES)}{rng.choice(OPERATORS)}{rng.choice(SPACES)}{rng.choice(VERSIONS)}"
            for _ in range(rng.randint(1, 3))
        ]
        found.add(rng.choice(NAMES) + rng.choice([",", ", ", " ,"]).join(parts))
    found |= {"attrs[extra]>=1", "attrs>=1; python_version<'3.13'", "attrs @ file:///x", " attrs"}
    found |= {
        "attrs (>=1)",
        "attrs>=1,",
        "attrs>=1,>=1.0",
        "attrs>=1 ",
        "attrs ",
        "attrs>=1.0.0,<2",
    }
    found |= {"attrs>=" + "1" * 19, "attrs==1." + "2" * 18, "a" * 300}
    return sorted(found)


def test_fast_path_agrees_with_packaging() -> None:
    texts = candidates()
    fast = {text: simple_requirement(text) for text in texts}
    taken = [text for text in texts if fast[text] is not None]  # None: packaging decides
    assert {text: fast[text] for text in taken} == {text: packaging_form(text) for text in taken}
    assert len(taken) > 500


def test_fast_path_takes_the_common_forms() -> None:
    assert simple_requirement("attrs") == "attrs"
    assert simple_requirement("idna >= 3.4, <4") == "idna<4,>=3.4"
    assert simple_requirement("numpy~=2.1") == "numpy~=2.1"
    for other in ("attrs[x]", "attrs; os_name=='nt'", "attrs>=1.0a1", "attrs==1.*", "~=1"):
        assert simple_requirement(other) is None
