"""How far apart a layer's per-channel weight ranges are, and what one scale per layer loses.

Krishnamoorthi 2018 (arXiv 1806.08342), Sec. 3.1: after batch-norm folding, the output
channels of a layer can have ranges orders of magnitude apart (MobileNets on ImageNet), and a
single (per-tensor) scale then rounds the small channels to zero.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from tfquant.errors import TfquantError


def weight_range_spread(ranges: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The spread of the per-channel weight ranges of each layer (whitepaper Sec. 3.1).

    For layer l with channel ranges r_k = max|W_k| (after BN folding,
    :func:`tfquant.algorithms.bn_fold.per_channel_weight_ranges`), the spread is
    ``s_l = max_k r_k / min_k r_k`` over channels with r_k > 0 (an all-zero channel is exact
    on any grid and is counted as ``dead_channels``). With one symmetric scale per layer,
    Δ_l = max_k r_k / (2^(b-1) - 1), channel k rounds to all zeros when r_k < Δ_l / 2, i.e.
    when r_k / max_k r_k < 1 / (2 (2^(b-1) - 1)): 1/254 at 8 bits, 1/14 at 4 bits.

    Args:
      ranges: Layer name -> per-channel ranges (layers with one channel are skipped).

    Returns:
      ``layers``, ``channels``, ``median_ratio`` and ``max_ratio`` (over layers),
      ``max_ratio_layer``, ``zeroed_channels_w8`` / ``zeroed_channels_w4`` (channels a
      symmetric per-layer grid rounds to zero), ``dead_channels`` and ``per_layer`` (name ->
      s_l).

    Raises:
      TfquantError: no layer has two or more output channels.
    """
    per_layer: dict[str, float] = {}
    channels = dead = 0
    zeroed = {8: 0, 4: 0}
    for name, r in ranges.items():
        r = np.asarray(r, np.float64).reshape(-1)
        if r.size < 2:
            continue
        live = r[r > 0]
        channels += r.size
        dead += int(r.size - live.size)
        if live.size == 0:
            continue
        per_layer[name] = float(live.max() / live.min())
        for bits in zeroed:
            zeroed[bits] += int(np.count_nonzero(live / live.max() < 1.0 / (2 * (2 ** (bits - 1) - 1))))
    if not per_layer:
        raise TfquantError("the model has no weight layer with two or more output channels to measure")
    worst = max(per_layer, key=per_layer.__getitem__)
    return {
        "layers": len(per_layer),
        "channels": channels,
        "median_ratio": float(np.median(list(per_layer.values()))),
        "max_ratio": per_layer[worst],
        "max_ratio_layer": worst,
        "zeroed_channels_w8": zeroed[8],
        "zeroed_channels_w4": zeroed[4],
        "dead_channels": dead,
        "per_layer": per_layer,
    }


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties; :func:`scipy.stats.spearmanr`).

    Returns nan when either side is constant (no ranking to correlate).
    """
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)
