"""Slow per-candidate reference searches, for the tests and the benchmark only.

These are the entropy (KL) and MSE amax searches written the way NVIDIA pytorch-quantization
writes them (``calib/histogram.py``: ``_compute_amax_entropy``, ``_compute_amax_mse``), one
candidate at a time, with the entropy search's pure-Python inner loops. The library never
calls them: :func:`tfquant.calibration.entropy.entropy_amax` and
:func:`tfquant.calibration.mse.mse_amax` are the vectorised searches that must return the same
amax, and ``experiments/bench_calibration_search.py`` times the two side by side.

Differences from pytorch-quantization, none of which changes the chosen candidate:

* the caller's ``counts`` are copied before ``bins[0] = bins[1]`` (the original's
  ``calib_hist[:]`` is a numpy view, so it edits the histogram in place);
* the MSE search runs in float64 numpy instead of float32 torch on the GPU;
* a candidate whose kept bins ``bins[:i]`` are all empty gets KL = inf (the original gets
  NaN from 0/0 in ``scipy.stats.entropy`` and NaN wins its argmin): such a Q has no mass at
  all where P has all of it.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy.stats import entropy


def entropy_amax_reference(
    counts: np.ndarray, edges: np.ndarray, *, bits: int, unsigned: bool, start_bin: int = 128
) -> float:
    """TensorRT's KL-divergence amax, one candidate at a time (pytorch-quantization's loop).

    Args:
      counts: histogram counts of |x| (n bins).
      edges: the n + 1 bin edges.
      bits: bit width of the integers.
      unsigned: the tensor is non-negative (one more bit of levels).
      start_bin: smallest candidate cut.

    Returns:
      ``edges[i]`` for the cut i with the smallest KL(P || Q), the last one on ties.
    """
    bins = np.array(counts, dtype=np.int64)
    bins[0] = bins[1]
    total_data = np.sum(bins)
    nbins = 1 << (bits - 1 + int(unsigned))
    starting = start_bin
    stop = len(bins)
    divergences = []
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(starting, stop + 1):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]
        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]
        total_counts_new = np.sum(new_density) + np.sum(bins[i:])
        reference_density = np.array(bins[: len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])
        total_counts_old = np.sum(reference_density)
        if round(total_counts_new) != total_data or round(total_counts_old) != total_data:
            raise RuntimeError(
                f"count mismatch: total_counts_new={total_counts_new}, "
                f"total_counts_old={total_counts_old}, total_data={total_data}"
            )
        if np.sum(new_density) == 0:
            divergences.append(math.inf)
        else:
            divergences.append(entropy(reference_density, new_density))
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return float(edges[last_argmin + starting])


def mse_amax_reference(
    counts: np.ndarray, edges: np.ndarray, *, bits: int, unsigned: bool, start_bin: int = 128
) -> float:
    """The amax minimising the histogram's fake-quantization MSE, one candidate at a time.

    pytorch-quantization's ``_compute_amax_mse`` with its ``fake_tensor_quant``:
    s = q_max / amax, x_hat = clamp(round(x·s), q_min, q_max) / s, with
    q_max = 2^(b - 1 + unsigned) - 1 and q_min = 0 (unsigned) or -q_max.

    Args:
      counts: histogram counts of |x| (n bins).
      edges: the n + 1 bin edges.
      bits: bit width of the integers.
      unsigned: the tensor is non-negative.
      start_bin: first candidate bin centre.

    Returns:
      The bin centre c_i (i in [start_bin, n - 1]) with the smallest
      mean_j(counts_j · (x_hat_j - c_j)²), the first one on ties.
    """
    counts = np.asarray(counts)
    edges = np.asarray(edges, dtype=np.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    max_bound = 2 ** (bits - 1 + int(unsigned)) - 1
    min_bound = 0 if unsigned else -max_bound
    mses = []
    arguments = []
    for i in range(start_bin, len(centers)):
        amax = centers[i]
        scale = max_bound / amax
        quant_centers = np.clip(np.round(centers * scale), min_bound, max_bound) / scale
        mses.append(((quant_centers - centers) ** 2 * counts).mean())
        arguments.append(i)
    argmin = int(np.argmin(mses))
    return float(centers[arguments[argmin]])
