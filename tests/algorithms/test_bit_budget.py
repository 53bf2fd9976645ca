"""The exact bit-budget solver: budget met exactly, optimal against brute force."""

import itertools
import math

import numpy as np
import pytest

from tfquant.algorithms.bit_budget import (
    BIT_CHOICES, cost_table, solve_allocation, uniform_allocation)
from tfquant.errors import TfquantError


def _brute(params, costs, budget, choices, exact=True):
    names = list(params)
    total_n = sum(params.values())
    best = None
    for combo in itertools.product(choices, repeat=len(names)):
        total = sum(params[n] * b for n, b in zip(names, combo))
        if total > budget * total_n or (exact and total != budget * total_n):
            continue
        cost = sum(costs[n][b] for n, b in zip(names, combo))
        if best is None or cost < best - 1e-12:
            best = cost
    return best


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_and_meets_budget(seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(2, 5))
    choices = (2, 3, 4, 5, 6)
    params = {f"l{i}": int(rng.integers(1, 40)) * 4 for i in range(n_layers)}
    fisher = {n: float(rng.lognormal(0, 2)) for n in params}
    amax = {n: float(rng.uniform(0.1, 2.0)) for n in params}
    costs = cost_table(fisher, amax, choices)
    budget = int(rng.integers(3, 5))
    alloc = solve_allocation(params, costs, budget, choices)
    assert alloc.total_bits == budget * sum(params.values())  # exactly the budget
    assert alloc.mean_bits == budget
    assert math.isclose(alloc.cost, _brute(params, costs, budget, choices), rel_tol=1e-9)
    loose = solve_allocation(params, costs, budget, choices, exact=False)
    assert loose.total_bits <= alloc.total_bits and loose.cost <= alloc.cost + 1e-12
    assert math.isclose(loose.cost, _brute(params, costs, budget, choices, exact=False), rel_tol=1e-9)


def test_sensitive_layer_gets_more_bits():
    params = {"a": 100, "b": 100}
    costs = cost_table({"a": 1000.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    alloc = solve_allocation(params, costs, 4)
    assert alloc.bits["a"] > alloc.bits["b"] and alloc.mean_bits == 4


def test_fractional_budget_and_uniform():
    params = {"a": 3, "b": 5}
    alloc = solve_allocation(params, cost_table({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}), 3.5)
    assert alloc.total_bits == 28 and alloc.mean_bits == 3.5  # 3*6 + 5*2 = 28 = 3.5 * 8
    assert set(uniform_allocation(params, 4).bits.values()) == {4}
    with pytest.raises(TfquantError, match="whole bit width"):
        uniform_allocation(params, 3.5)
    with pytest.raises(TfquantError, match="bit budget"):
        solve_allocation(params, cost_table({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}), 9)
    assert BIT_CHOICES == (2, 3, 4, 5, 6, 7, 8)
