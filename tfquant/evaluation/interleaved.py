"""Latency of several models timed side by side: interleaved rounds in one process.

Timing model A for a minute and then model B for a minute compares two different machines
when the load on the CPU changes in between (other processes, frequency scaling, thermal
state). Here every round times each model a few invokes, in a shuffled order, so a burst of
load hits all of them alike; a speed-up is then the median over rounds of the per-round
ratio of medians,

    speedup(a, b) = median_r( median(t_b[r]) / median(t_a[r]) )   (b's time over a's),

which cancels load that is steady within a round (about a second) even when it changes
between rounds. Single-image ``invoke()`` timing as :func:`tfquant.evaluation.measure_latency`
does it (input set once, ``time.perf_counter_ns``, input/output copies not timed).

Slow models (int16x8 on reference kernels takes seconds per image on ResNet50) are bounded:
a model stops being timed once its timed invokes add up to ``max_seconds`` and it has at
least ``min_runs`` of them; its record says how many runs it got.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Hashable, Mapping, Sequence, TypeVar

import numpy as np

from tfquant.errors import TfquantError

K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class InterleavedTimes:
    """The timed invokes of one model, in ms, grouped by round (a round it sat out is empty)."""

    rounds: tuple[tuple[float, ...], ...]
    bounded: bool

    @property
    def all_ms(self) -> np.ndarray:
        return np.array([t for r in self.rounds for t in r], dtype=np.float64)

    @property
    def runs(self) -> int:
        return int(sum(len(r) for r in self.rounds))

    @property
    def median_ms(self) -> float:
        return float(np.median(self.all_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.all_ms, 90))

    @property
    def min_ms(self) -> float:
        return float(self.all_ms.min())


def speedup(a: InterleavedTimes, b: InterleavedTimes) -> float | None:
    """How many times faster ``a`` ran than ``b``: median over the rounds both were timed in of
    ``median(b's round) / median(a's round)``; None when they share no round."""
    ratios = [float(np.median(rb)) / float(np.median(ra))
              for ra, rb in zip(a.rounds, b.rounds) if ra and rb]
    return float(np.median(ratios)) if ratios else None


def time_interleaved(
    invokes: Mapping[K, Callable[[], None]],
    *,
    rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 3,
    max_seconds: float = 30.0,
    min_runs: int = 3,
    seed: int = 0,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[K, InterleavedTimes]:
    """Times every ``invokes[k]()`` (one single-image inference, input already set) side by side.

    Args:
      invokes: Key -> a callable that runs one inference.
      rounds: Rounds; each times every model still being timed ``runs_per_round`` times,
        the models in a fresh random order per round.
      warmup: Untimed invokes of each model before the first round (one for a model whose
        first invoke takes more than ``max_seconds / 10``).
      max_seconds: A model stops being timed after this much timed invoke time, once it has
        ``min_runs`` runs (it is then ``bounded``).
      seed: Seed of the round orders.
      clock: Nanosecond clock (tests pass a fake one).
    """
    for name, value in (("rounds", rounds), ("runs_per_round", runs_per_round), ("min_runs", min_runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TfquantError(f"{name} must be an integer >= 1, got {value!r}")
    if not invokes:
        raise TfquantError("no models to time")
    keys: Sequence[K] = list(invokes)
    spent = {k: 0.0 for k in keys}
    for k in keys:
        t0 = clock()
        invokes[k]()
        first_s = (clock() - t0) / 1e9
        for _ in range(warmup - 1 if first_s <= max_seconds / 10 else 0):
            invokes[k]()
    times: dict[K, list[list[float]]] = {k: [] for k in keys}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for k in keys:
            times[k].append([])
        for i in rng.permutation(len(keys)):
            k = keys[int(i)]
            done = sum(len(r) for r in times[k])
            if spent[k] >= max_seconds and done >= min_runs:
                continue
            invoke, row = invokes[k], times[k][-1]
            for _ in range(runs_per_round):
                t0 = clock()
                invoke()
                row.append((clock() - t0) / 1e6)
                spent[k] += row[-1] / 1e3
                if spent[k] >= max_seconds and done + len(row) >= min_runs:
                    break
    full = rounds * runs_per_round
    return {k: InterleavedTimes(rounds=tuple(tuple(r) for r in times[k]),
                                bounded=sum(len(r) for r in times[k]) < full) for k in keys}
