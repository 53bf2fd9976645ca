"""Per-layer weight bit widths under an exact average-bit budget (QBitOpt's allocation step).

QBitOpt (Peters et al. 2023, arXiv 2307.04535) re-allocates bit widths during QAT by solving
a constrained problem on fast sensitivities. Its exact formulas are not available to us; this
is OUR RECONSTRUCTION (shared/docs/methods.md, Sec. 4):

* sensitivity F_l = EMA over training steps of Σ_i (∂L/∂w_i)² over layer l's latent float
  weights (the empirical Fisher trace);
* expected loss increase of layer l at b bits (second order, uniform rounding noise of
  variance Δ²/12 per weight):  Ω_l(b) = F_l · Δ_l(b)² / 24,  Δ_l(b) = a_l / (2^(b-1) - 1),
  a_l² = the mean over output channels of max|W_c|² (the symmetric narrow-range step);
* problem: minimise Σ_l Ω_l(b_l)  subject to  Σ_l n_l · b_l = B · Σ_l n_l,  b_l ∈ {2..8}
  (n_l = parameters of layer l, B the budget in average bits).

:func:`solve_allocation` solves it exactly as a multiple-choice knapsack by dynamic
programming over the integer parameter-weighted bit total (divided by gcd(n_l)), so the
budget is met exactly (when B · Σ n_l is an integer that some allocation reaches; otherwise
the largest reachable total below it is taken and reported).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from tfquant.errors import TfquantError

BIT_CHOICES: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
MAX_DP_STATES = 20_000_000


@dataclasses.dataclass(frozen=True)
class Allocation:
    """A solved allocation.

    Attributes:
      bits: Layer name -> bit width, in the order the layers were given.
      budget: The requested average bits B.
      mean_bits: The achieved parameter-weighted average Σ n_l b_l / Σ n_l.
      total_bits: Σ n_l b_l (exact integer).
      cost: Σ_l Ω_l(b_l) of the solution.
    """

    bits: Mapping[str, int]
    budget: float
    mean_bits: float
    total_bits: int
    cost: float

    def to_dict(self) -> dict[str, object]:
        return {"bits": dict(self.bits), "budget": self.budget, "mean_bits": self.mean_bits,
                "total_bits": self.total_bits, "cost": self.cost}


def check_budget(budget: object, choices: Sequence[int] = BIT_CHOICES) -> float:
    """``budget`` as a float in [min(choices), max(choices)].

    Raises:
      TfquantError: otherwise, naming the value and the range.
    """
    ok = isinstance(budget, (int, float, np.integer, np.floating)) and not isinstance(budget, bool)
    if not ok or not math.isfinite(float(budget)) or not min(choices) <= float(budget) <= max(choices):
        raise TfquantError(
            f"bit budget must be a number of average bits in [{min(choices)}, {max(choices)}], "
            f"got {budget!r}; e.g. 3 or 4")
    return float(budget)


def expected_loss_increase(fisher: float, amax_sq: float, bits: int) -> float:
    """Ω(b) = F · Δ(b)² / 24 with Δ(b) = a / (2^(b-1) - 1) (see the module docstring)."""
    step = math.sqrt(amax_sq) / (2 ** (bits - 1) - 1)
    return float(fisher) * step * step / 24.0


def cost_table(
    fisher: Mapping[str, float], amax_sq: Mapping[str, float], choices: Sequence[int] = BIT_CHOICES
) -> dict[str, dict[int, float]]:
    """Ω_l(b) for every layer and bit width in ``choices``."""
    return {name: {b: expected_loss_increase(fisher[name], amax_sq[name], b) for b in choices}
            for name in fisher}


def solve_allocation(
    params: Mapping[str, int],
    costs: Mapping[str, Mapping[int, float]],
    budget: float,
    choices: Sequence[int] = BIT_CHOICES,
    *,
    exact: bool = True,
) -> Allocation:
    """The allocation minimising Σ_l costs[l][b_l] with Σ_l n_l b_l = budget · Σ_l n_l.

    Exact multiple-choice knapsack DP over the integer total T = Σ n_l b_l / g
    (g = gcd of the n_l): dp_l[t] = min_b dp_{l-1}[t - n_l b / g] + cost_l(b). The target is
    floor(budget · Σ n_l / g) (exactly the budget when that is an integer); when no
    allocation reaches it, the largest reachable total below it. Ties are broken toward
    fewer bits in earlier layers (deterministic).

    Args:
      params: Layer name -> n_l (> 0), in layer order.
      costs: Layer name -> {bits: cost}, every b in ``choices``.
      budget: Average bits B in [min(choices), max(choices)].
      choices: Allowed bit widths.
      exact: True (the issue's contract): the total equals the target. False: any total
        <= the target (methods.md's form); can be cheaper when few, very unequal layers make
        the exact total rigid.

    Raises:
      TfquantError: an empty or inconsistent problem, a budget out of range.
    """
    budget = check_budget(budget, choices)
    names = list(params)
    if not names:
        raise TfquantError("bit allocation needs at least one layer with a kernel")
    ns = [int(params[n]) for n in names]
    if min(ns) <= 0:
        raise TfquantError(f"every layer needs > 0 parameters, got {dict(params)}")
    missing = [n for n in names if n not in costs or any(b not in costs[n] for b in choices)]
    if missing:
        raise TfquantError(f"no cost for every bit width of layer(s) {missing}")
    g = math.gcd(*ns)
    units = [n // g for n in ns]
    total_units = sum(units)
    target = math.floor(budget * total_units + 1e-9)
    size = max(choices) * total_units + 1
    if size * len(names) > MAX_DP_STATES:
        raise TfquantError(
            f"bit allocation of {len(names)} layers with {total_units} parameter units is too large "
            f"for the exact DP ({size * len(names)} states)")
    inf = np.inf
    dp = np.full(size, inf)
    dp[0] = 0.0
    choice = np.zeros((len(names), size), dtype=np.int8)
    for i, (name, u) in enumerate(zip(names, units)):
        new = np.full(size, inf)
        pick = np.zeros(size, dtype=np.int8)
        for b in sorted(choices):
            shifted = np.full(size, inf)
            shifted[u * b:] = dp[: size - u * b] + float(costs[name][b])
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = b
        dp, choice[i] = new, pick
    reachable = np.flatnonzero(np.isfinite(dp[: target + 1]))
    if reachable.size == 0:
        raise TfquantError(
            f"no allocation with bits in {list(choices)} has an average <= {budget}; raise the budget")
    t = int(reachable[-1]) if exact else int(reachable[np.argmin(dp[reachable])])
    bits: dict[str, int] = {}
    for i in range(len(names) - 1, -1, -1):
        b = int(choice[i, t])
        bits[names[i]] = b
        t -= units[i] * b
    assert t == 0
    ordered = {n: bits[n] for n in names}
    total = sum(n * ordered[name] for name, n in zip(names, ns))
    return Allocation(bits=ordered, budget=budget, mean_bits=total / sum(ns), total_bits=total,
                      cost=float(sum(costs[n][ordered[n]] for n in names)))


def uniform_allocation(params: Mapping[str, int], budget: float,
                       choices: Sequence[int] = BIT_CHOICES) -> Allocation:
    """Every layer at the same bits (``fixed``): the budget must be one of ``choices``.

    Raises:
      TfquantError: a budget that is not a whole bit width in ``choices``.
    """
    budget = check_budget(budget, choices)
    if budget != int(budget) or int(budget) not in choices:
        raise TfquantError(
            f"--bit_allocation fixed needs a whole bit width as budget ({list(choices)}), got {budget}; "
            "use oneshot or qbitopt for a fractional budget")
    b = int(budget)
    total = sum(int(n) * b for n in params.values())
    return Allocation(bits={name: b for name in params}, budget=budget, mean_bits=float(b),
                      total_bits=total, cost=math.nan)
