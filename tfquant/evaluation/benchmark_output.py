"""Parses the text LiteRT's ``benchmark_model`` (and ``benchmark_litert_model``) prints.

Formats understood (each line may carry an ``INFO:`` prefix, or none in old releases):

* recent ``benchmark_model``: ``count=.. first=.. curr=.. min=.. max=.. avg=.. std=..
  [p5=.. median=.. p95=..]`` (the last such line is the measured runs, the one before the
  warm-up), ``Inference timings in us: Init: .., First inference: .., Warmup (avg): ..,
  Inference (avg): ..``, ``Memory footprint delta from the start of the tool (MB):
  init=.. overall=..``, ``Overall peak memory footprint (MB) via periodic monitoring: ..``;
* old ``benchmark_model`` (TF 1.x): ``Timings (microseconds): count=.. first=.. curr=..
  min=.. max=.. avg=.. std=..`` and ``Average inference timings in us: Warmup: ..,
  Init: .., Inference: ..``;
* ``benchmark_litert_model`` (CompiledModel API): ``Model initialization: .. ms``,
  ``Inference (avg|min|max|std): .. ms``, ``Peak memory: .. MB``;
* delegation: ``Replacing N out of M node(s) with delegate (NAME) node`` (summed over
  partitions lines), Hexagon's ``Hexagon delegate: N nodes delegated out of M nodes``, and the
  lines saying a delegate did not apply (:data:`FALLBACK_PATTERNS`);
* op profiling (``--enable_op_profiling``): the ``Summary by node type`` table.

Times in the output are microseconds (``benchmark_model``) or milliseconds
(``benchmark_litert_model``); the record is in milliseconds.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_NUM = r"(-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)"
_STATS = re.compile(r"count=(\d+)((?:\s+\w+=" + _NUM + r")+)")
_FIELD = re.compile(r"(\w+)=" + _NUM)
_RECENT_TIMINGS = re.compile(
    r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
    + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM
)
_OLD_TIMINGS = re.compile(
    r"Average inference timings in us: Warmup: " + _NUM + r", Init: " + _NUM + r", (?:Inference|no stats): " + _NUM
)
_MEMORY_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUM + r" overall=" + _NUM)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\)")
_HEXAGON = re.compile(r"Hexagon delegate: (\d+) nodes delegated out of (\d+) nodes")
_LITERT = {
    "init_ms": re.compile(r"Model initialization:\s+" + _NUM + r" ms"),
    "latency_ms_avg": re.compile(r"Inference \(avg\):\s+" + _NUM + r" ms"),
    "latency_ms_min": re.compile(r"Inference \(min\):\s+" + _NUM + r" ms"),
    "latency_ms_max": re.compile(r"Inference \(max\):\s+" + _NUM + r" ms"),
    "latency_ms_std": re.compile(r"Inference \(std\):\s+" + _NUM),
    "peak_memory_mb": re.compile(r"Peak memory:\s+" + _NUM + r" MB"),
}
FALLBACK_PATTERNS = (
    re.compile(r"delegate is explicitly applied, the model graph will not be executed by the delegate", re.I),
    re.compile(r"Failed to (?:apply|create) \w+ delegate", re.I),
    re.compile(r"Could not create \w+ delegate", re.I),
    re.compile(r"delegat\w* is not supported on this device", re.I),
    re.compile(r"falling back to (?:the )?CPU", re.I),
)
"""Lines meaning the requested delegate did not take the model."""


@dataclasses.dataclass
class ParsedBenchmark:
    """What one ``benchmark_model`` run printed (milliseconds, MB); ``None``: not printed."""

    format: str
    latency_ms_avg: float | None = None
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None
    latency_ms_std: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p5: float | None = None
    latency_ms_p95: float | None = None
    runs: int | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_ms_avg: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegated_ops: int | None = None
    total_ops: int | None = None
    delegates: tuple[str, ...] = ()
    fallback: str | None = None
    op_profile: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _stats_lines(text: str) -> list[tuple[str, dict[str, float]]]:
    out = []
    for line in text.splitlines():
        m = _STATS.search(line)
        if m:
            fields = {k: float(v) for k, v in _FIELD.findall(line[m.start():])}
            out.append((line, fields))
    return out


def _op_profile(text: str) -> list[dict[str, Any]] | None:
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "Summary by node type" in line]
    if not starts:
        return None
    rows = []
    for line in lines[starts[-1] + 2:]:  # skip the header row
        cells = line.replace("INFO:", "").split()
        if len(cells) < 5 or cells[0].startswith("="):
            break
        try:
            rows.append({
                "node_type": cells[0], "count": int(cells[1]), "avg_ms": float(cells[2]),
                "percent": float(cells[3].rstrip("%")),
            })
        except ValueError:
            break
    return rows


def parse(text: str) -> ParsedBenchmark:
    """Everything :class:`ParsedBenchmark` holds that ``text`` contains."""
    litert = {k: float(m.group(1)) for k, p in _LITERT.items() if (m := p.search(text))}
    recent = _RECENT_TIMINGS.search(text)
    old = _OLD_TIMINGS.search(text)
    fmt = "litert" if "latency_ms_avg" in litert else "recent" if recent else "old" if old else "unknown"
    r = ParsedBenchmark(format=fmt)
    stats = _stats_lines(text)
    if fmt != "old":  # op profiling appends its own "Timings (microseconds)" summary line
        stats = [(line, f) for line, f in stats if "Timings (microseconds)" not in line] or stats
    if stats:
        line, s = stats[-1]  # the measured runs come after the warm-up runs
        r.runs = int(s["count"])
        for key, name in (("avg", "latency_ms_avg"), ("min", "latency_ms_min"), ("max", "latency_ms_max"),
                          ("std", "latency_ms_std"), ("median", "latency_ms_median"),
                          ("p5", "latency_ms_p5"), ("p95", "latency_ms_p95")):
            if key in s:
                setattr(r, name, s[key] / 1000.0)
        if "first" in stats[0][1]:
            r.first_inference_ms = stats[0][1]["first"] / 1000.0
    if recent:
        init, first, warmup, avg = (float(g) for g in recent.groups())
        r.init_ms, r.first_inference_ms, r.warmup_ms_avg = init / 1000.0, first / 1000.0, warmup / 1000.0
        r.latency_ms_avg = avg / 1000.0
    elif old:
        warmup, init, avg = (float(g) for g in old.groups())
        r.init_ms, r.warmup_ms_avg, r.latency_ms_avg = init / 1000.0, warmup / 1000.0, avg / 1000.0
    for key, value in litert.items():  # 2-decimal ms: only what the count= lines did not give
        if getattr(r, key) is None:
            setattr(r, key, value)
    if m := _MEMORY_DELTA.search(text):
        r.memory_init_mb, r.memory_overall_mb = float(m.group(1)), float(m.group(2))
    if m := _PEAK.search(text):
        r.peak_memory_mb = float(m.group(1))
    replacing = _REPLACING.findall(text)
    if replacing:
        r.delegated_ops = sum(int(n) for n, _, _ in replacing)
        r.total_ops = max(int(m) for _, m, _ in replacing)
        r.delegates = tuple(sorted({d for _, _, d in replacing}))
    elif m := _HEXAGON.search(text):
        r.delegated_ops, r.total_ops, r.delegates = int(m.group(1)), int(m.group(2)), ("hexagon",)
    for line in text.splitlines():
        if any(p.search(line) for p in FALLBACK_PATTERNS):
            r.fallback = line.replace("INFO:", "").replace("WARNING:", "").replace("ERROR:", "").strip()
            break
    r.op_profile = _op_profile(text)
    return r
