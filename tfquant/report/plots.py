"""The run report's plots (matplotlib, Agg backend), each returned as PNG bytes.

* :func:`pareto_plot`: accuracy vs a cost (size or latency) of one model's variants, with the
  Pareto front marked (:func:`pareto_front`).
* :func:`calibrator_plot`: accuracy per calibrator, per model, relative to float.
* :func:`sensitivity_plot`: per-layer accuracy drop bars (a sensitivity REPORT.json).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Point:
    """One variant of a model: its accuracy (fraction), a cost (lower is better), what it is."""

    label: str
    accuracy: float
    cost: float
    group: str = ""
    n_examples: int | None = None
    comparable: bool = True
    """False: evaluated on a different test subset than the plot's front (drawn grey, not on it)."""


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, by increasing cost.

    ``q`` dominates ``p`` when ``q.accuracy >= p.accuracy`` and ``q.cost <= p.cost`` with at
    least one strict (maximise accuracy, minimise cost). Sorting by cost (ties: higher
    accuracy first) and keeping each point more accurate than every cheaper one gives the
    front in O(n log n); of exact duplicates the first is kept.
    """
    front: list[Point] = []
    best = float("-inf")
    for p in sorted(points, key=lambda p: (p.cost, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


_MARKERS = "osD^v<>pPX*h"


def pareto_plot(model: str, points: Sequence[Point], *, cost_label: str, log_x: bool = False) -> bytes:
    """Accuracy vs ``cost_label`` for ``points`` (one marker per group, e.g. experiment); the
    front (over the comparable points) is a red step line and its points are labelled; points
    measured on another test subset are grey crosses."""
    front = pareto_front([p for p in points if p.comparable])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    others = [p for p in points if not p.comparable]
    if others:
        ax.scatter([p.cost for p in others], [100 * p.accuracy for p in others], marker="x", color="grey",
                   s=30, alpha=0.6, label="other test subset (not on the front)")
    groups = list(dict.fromkeys(p.group for p in points if p.comparable))
    for g, group in enumerate(groups):
        ps = [p for p in points if p.group == group and p.comparable]
        ax.scatter([p.cost for p in ps], [100 * p.accuracy for p in ps], marker=_MARKERS[g % len(_MARKERS)],
                   s=36, alpha=0.7, label=group or None)
    if front:
        ax.step([p.cost for p in front], [100 * p.accuracy for p in front], where="post", color="red",
                linewidth=1.2, label="Pareto front")
        ax.scatter([p.cost for p in front], [100 * p.accuracy for p in front], facecolors="none",
                   edgecolors="red", s=110, linewidths=1.4)
        for p in front:
            ax.annotate(p.label, (p.cost, 100 * p.accuracy), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{model}: accuracy vs {cost_label.split(' (')[0]}")
    ax.grid(True, alpha=0.3)
    if any(groups) or others:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def calibrator_plot(title: str, accuracy: Mapping[str, Mapping[str, float]], float_accuracy: Mapping[str, float]
                    ) -> bytes:
    """Grouped bars: for each model (``accuracy[model][column]``), each calibrator column's
    accuracy minus the model's float accuracy, in points."""
    models = list(accuracy)
    columns = list(dict.fromkeys(c for m in models for c in accuracy[m]))
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.0, 0.9 * len(columns) + 2)), 4.2))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        base = float_accuracy.get(m)
        xs, ys = [], []
        for j, c in enumerate(columns):
            if c in accuracy[m]:
                xs.append(j + (i - (len(models) - 1) / 2) * width)
                ys.append(100 * (accuracy[m][c] - base) if base is not None else 100 * accuracy[m][c])
        ax.bar(xs, ys, width=width, label=m)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy - float (pt)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def sensitivity_plot(title: str, layers: Sequence[Mapping[str, Any]], *, top: int = 25) -> bytes:
    """Horizontal bars of ``accuracy_drop`` (in points) of the ``top`` most sensitive layers."""
    ranked = sorted(layers, key=lambda d: float(d.get("accuracy_drop") or 0.0), reverse=True)[:top]
    names = [f"{d.get('name')} ({d.get('op', '?')})" for d in ranked][::-1]
    drops = [100 * float(d.get("accuracy_drop") or 0.0) for d in ranked][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(names) + 1.2))
    ax.barh(names, drops, color="tab:orange")
    ax.set_xlabel("accuracy drop with only this layer quantized (pt)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)
