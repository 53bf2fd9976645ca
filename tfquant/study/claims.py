"""Claims as data: "did the paper's finding hold?", evaluated from a study's records.

A :class:`Claim` is a paper's qualitative finding stated as comparisons between two cells of
the same group (usually a model): ``d = 100 * (value[group, a] - value[group, b])`` points
(pt, i.e. top-1 percentage points), tested as ``d OP threshold``. Each (group, comparison)
whose two cells were both measured is one outcome; the verdict aggregates the outcomes:

* :attr:`Aggregate.ALL` -- ``held`` when every outcome holds, else ``did not hold``
  (claims of the form "on every model");
* :attr:`Aggregate.GRADED` -- ``held`` when all hold, ``did not hold`` when none does,
  ``partly`` in between;

and ``not tested`` when no group has the cells. A group counts only when all of the claim's
comparisons can be made in it. Thresholds are inclusive for ``>=``, ``<=`` and ``abs<=`` and
exclusive for ``>`` and ``<``, each with a :data:`TOLERANCE_PT` allowance toward "holds" for
the inclusive ones (20 images of 10,000 are 0.2 pt, not 0.2000000000000046).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from typing import Callable, Mapping, Sequence

from tfquant.errors import TfquantError

TOLERANCE_PT = 1e-9


TIE_PT = 0.2
"""'A is at least as good as B' allows A to be this many accuracy points (0.01 top-1) below B
(test-set noise); the studies' ties."""


class Verdict(str, enum.Enum):
    """Whether a claim held on our records (the value is the markdown wording)."""

    HELD = "held"
    NOT_HELD = "did not hold"
    PARTLY = "partly"
    NOT_TESTED = "not tested"


class Aggregate(str, enum.Enum):
    """How outcomes become a verdict (see the module docstring)."""

    ALL = "all"
    GRADED = "graded"


_OPS: Mapping[str, Callable[[float, float], bool]] = {
    ">=": lambda d, t: d >= t - TOLERANCE_PT,
    "<=": lambda d, t: d <= t + TOLERANCE_PT,
    ">": lambda d, t: operator.gt(d, t + TOLERANCE_PT),
    "<": lambda d, t: operator.lt(d, t - TOLERANCE_PT),
    "abs<=": lambda d, t: abs(d) <= t + TOLERANCE_PT,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Compare:
    """One comparison of cell ``a`` against cell ``b`` in a group, in points.

    Attributes:
      a, b: Cell names.
      op: ``>=``, ``<=``, ``>``, ``<`` or ``abs<=``; holds when ``d op threshold`` with
        ``d = 100 * (value[a] - value[b])``.
      threshold: In points (e.g. ``-2.0`` with ``>=``: "a at most 2 pt below b").
      text: How a group's outcome is described; format fields ``a``, ``b`` (the values) and
        ``pt`` (d).
    """

    a: str
    b: str
    op: str
    threshold: float
    text: str = "{pt:+.2f} pt"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise TfquantError(f"unknown comparison {self.op!r}; choose from: {', '.join(_OPS)}")

    def test(self, values: Mapping[tuple[str, str], float], group: str) -> tuple[bool, str] | None:
        """(holds, description) in ``group``; None when a cell was not measured there."""
        if (group, self.a) not in values or (group, self.b) not in values:
            return None
        a, b = values[(group, self.a)], values[(group, self.b)]
        pt = 100.0 * (a - b) + 0.0  # + 0.0: no "-0.00"
        return _OPS[self.op](pt, self.threshold), self.text.format(a=a, b=b, pt=pt)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A paper's finding as data.

    Attributes:
      claim: What is tested, with its threshold (one sentence).
      paper: What the paper reports.
      compares: The comparisons; all must hold in a group.
      aggregate: How the outcomes become a verdict.
      groups: Only groups whose name starts with this (e.g. ``"mobilenet"``); None: all.
    """

    claim: str
    paper: str
    compares: tuple[Compare, ...]
    aggregate: Aggregate = Aggregate.ALL
    groups: str | None = None

    def __post_init__(self) -> None:
        if not self.compares:
            raise TfquantError(f"claim {self.claim!r} has no comparison")


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """A claim checked against the records: what our numbers say and the verdict."""

    claim: str
    paper: str
    ours: str
    verdict: Verdict


def verdict_of(outcomes: Sequence[bool], aggregate: Aggregate = Aggregate.ALL) -> Verdict:
    """The verdict of a list of outcomes (see :class:`Aggregate`)."""
    if not outcomes:
        return Verdict.NOT_TESTED
    if all(outcomes):
        return Verdict.HELD
    if aggregate is Aggregate.GRADED and any(outcomes):
        return Verdict.PARTLY
    return Verdict.NOT_HELD


def _ours(parts: Sequence[str], failed: Sequence[str], n: int) -> str:
    """The per-group descriptions, and which groups fail when some (not all) of the ``n`` do."""
    ours = "; ".join(parts)
    if failed and len(failed) < n:
        ours += f" (fails on {', '.join(failed)})"
    return ours


def listed_claim(claim: str, paper: str, items: Sequence[tuple[str, bool | None, str]],
                 aggregate: Aggregate = Aggregate.GRADED) -> ClaimResult:
    """A claim that is not "A vs B", tested per item ``(group, holds or None = not counted,
    text)``; rendered like :func:`evaluate_claim`'s."""
    outcomes = [ok for _, ok, _ in items if ok is not None]
    failed = [g for g, ok, _ in items if ok is False]
    ours = _ours([f"{g} {text}" for g, _, text in items], failed, len(outcomes)) or "no records"
    return ClaimResult(claim, paper, ours, verdict_of(outcomes, aggregate))


def evaluate_claim(claim: Claim, values: Mapping[tuple[str, str], float], groups: Sequence[str]) -> ClaimResult:
    """Tests ``claim`` on ``values`` ((group, cell) -> value) for each of ``groups``."""
    outcomes: list[bool] = []
    parts: list[str] = []
    failed: list[str] = []
    for g in groups:
        if claim.groups is not None and not g.startswith(claim.groups):
            continue
        tested = [c.test(values, g) for c in claim.compares]
        if any(t is None for t in tested):
            continue
        oks = [t[0] for t in tested if t is not None]
        outcomes += oks
        parts.append(f"{g} " + ", ".join(t[1] for t in tested if t is not None))
        if not all(oks):
            failed.append(g)
    if not parts:
        return ClaimResult(claim.claim, claim.paper, "no records", Verdict.NOT_TESTED)
    return ClaimResult(claim.claim, claim.paper, _ours(parts, failed, len(parts)),
                       verdict_of(outcomes, claim.aggregate))


def evaluate_claims(
    claims: Sequence[Claim], values: Mapping[tuple[str, str], float], groups: Sequence[str]
) -> list[ClaimResult]:
    """:func:`evaluate_claim` for each claim, in order."""
    return [evaluate_claim(c, values, groups) for c in claims]


def claims_section(title: str, header: str, results: Sequence[ClaimResult]) -> list[str]:
    """The ``## title`` section of results.md: ``header`` (how the claims are computed), then
    :func:`claims_markdown`."""
    return ["", f"## {title}", "", header, "", *claims_markdown(results)]


def claims_markdown(results: Sequence[ClaimResult]) -> list[str]:
    """One bullet per claim: ``- **verdict**: claim. Paper: ... Ours: ...``."""
    return [f"- **{r.verdict.value}**: {r.claim}. Paper: {r.paper}. Ours: {r.ours}." for r in results]
