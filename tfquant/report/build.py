"""One self-contained HTML report per run folder: ``results/<run>/report.html``.

What goes in, all read from the run folder (nothing is re-measured):

* every table of the run: each experiment's ``results.md`` (and any other ``.md`` table in
  the run) rendered to HTML (:mod:`tfquant.report.markdown_html`);
* plots (:mod:`tfquant.report.plots`), inline as base64 PNG ``data:`` URIs so the one file
  opens offline: per model, accuracy vs size and accuracy vs latency over every variant any
  experiment of the run measured in the TFLite interpreter, with the Pareto front marked
  (also written as ``pareto/<model>_size.png`` and ``pareto/<model>_latency.png``);
  accuracy per calibrator (the calibration study's records); per-layer sensitivity bars for
  every sensitivity report (a JSON with a ``layers`` list of ``name`` / ``op`` /
  ``accuracy_drop``) in the run;
* the environment: CPU model and SIMD features, library versions, git revision and time of
  every experiment's runs (their ``config.json`` provenance) and of the report;
* every model's recipe (the ``recipe`` of each record, one entry per distinct recipe).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Mapping

from tfquant.errors import TfquantError
from tfquant.io_utils import read_jsonl, write_bytes_atomic, write_text_atomic
from tfquant.report import plots
from tfquant.report.markdown_html import inline, to_html

REPORT_HTML = "report.html"
PARETO_DIR = "pareto"
_SKIP_DIRS = {"models", PARETO_DIR, "__pycache__"}
_MAX_JSON_BYTES = 20 * 2**20


def _files(run: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` under ``run``, outside ``models/`` (the .tflite folders)."""
    out = []
    for path in sorted(run.rglob(pattern)):
        if path.is_file() and not _SKIP_DIRS & set(path.relative_to(run).parts[:-1]):
            out.append(path)
    return out


def _experiment_of(run: Path, path: Path) -> str:
    rel = path.parent.relative_to(run)
    return "/".join(rel.parts) if rel.parts else run.name


def load_run_records(run: Path) -> list[dict[str, Any]]:
    """Every record of every ``*.jsonl`` in the run, each with ``experiment`` set (its folder
    name when the record does not say)."""
    records = []
    for path in _files(run, "*.jsonl"):
        for d in read_jsonl(path):
            if isinstance(d, dict):
                records.append({"experiment": _experiment_of(run, path), **d})
    return records


def variant_label(r: Mapping[str, Any]) -> str:
    """What a record measured, in the words of its experiment's table (variant, mode +
    calibrator column, cell or mode)."""
    if r.get("variant"):
        return str(r["variant"])
    if r.get("column"):
        return str(r["column"]) if r.get("mode") in (None, r["column"]) else f"{r['mode']} {r['column']}"
    if r.get("cell"):
        return str(r["cell"])
    return str(r.get("mode", "?"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def pareto_points(records: list[dict[str, Any]]) -> dict[str, dict[str, list[plots.Point]]]:
    """model -> {"size": points, "latency": points} from finished TFLite records with accuracy.

    Size points are one per (experiment, variant) (the file does not depend on the runtime);
    latency points one per (experiment, variant, runtime, threads). Accuracies on different
    test subsets do not compare: only the points evaluated on the most examples (usually the
    whole test split) are ``comparable`` and can be on the front.
    """
    out: dict[str, dict[str, dict[tuple, plots.Point]]] = defaultdict(lambda: {"size": {}, "latency": {}})
    for r in records:
        if r.get("error") or r.get("executed_in") != "tflite" or not _is_number(r.get("accuracy")):
            continue
        model, label, exp = str(r.get("model", "?")), variant_label(r), str(r["experiment"])
        n = r.get("n_examples") if _is_number(r.get("n_examples")) else None
        if _is_number(r.get("size_bytes")):
            out[model]["size"].setdefault((exp, label), plots.Point(label, float(r["accuracy"]),
                                                                    r["size_bytes"] / 2**20, exp, n))
        if _is_number(r.get("latency_ms_median")):
            full = f"{label} [{r.get('runtime', '?')} {r.get('threads', '?')}T]"
            out[model]["latency"].setdefault((exp, full), plots.Point(full, float(r["accuracy"]),
                                                                      float(r["latency_ms_median"]), exp, n))
    result: dict[str, dict[str, list[plots.Point]]] = {}
    for model, kinds in out.items():
        result[model] = {}
        for kind, points in kinds.items():
            most = max((p.n_examples or 0 for p in points.values()), default=0)
            result[model][kind] = [dataclasses.replace(p, comparable=(p.n_examples or 0) == most)
                                   for p in points.values()]
    return result


def calibrator_tables(records: list[dict[str, Any]]) -> dict[str, tuple[dict[str, dict[str, float]], dict[str, float]]]:
    """mode -> (accuracy[model][column], float accuracy per model), from records that carry a
    calibrator ``column`` (the calibration study)."""
    floats: dict[str, float] = {}
    by_mode: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get("error") or not _is_number(r.get("accuracy")) or "column" not in r:
            continue
        if r.get("column") == "float":
            floats[str(r["model"])] = float(r["accuracy"])
        else:
            by_mode[str(r.get("mode"))][str(r["model"])][str(r["column"])] = float(r["accuracy"])
    return {mode: ({m: dict(c) for m, c in models.items()}, floats) for mode, models in by_mode.items()}


def sensitivity_reports(run: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """(path, layers) of every JSON in the run that is a sensitivity report (a ``layers`` list
    of objects with ``name`` and ``accuracy_drop``)."""
    for path in _files(run, "*.json"):
        if path.name == "config.json" or path.stat().st_size > _MAX_JSON_BYTES:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        layers = data.get("layers") if isinstance(data, dict) else None
        if isinstance(layers, list) and layers and all(
                isinstance(d, dict) and "name" in d and _is_number(d.get("accuracy_drop")) for d in layers):
            yield path, layers


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _environment(run: Path) -> str:
    from tfquant.study.provenance import provenance

    now = provenance()
    machine = now["machine"]
    rows = [("CPU", machine.get("cpu_model")), ("cores", machine.get("cpus")),
            ("SIMD features", ", ".join(machine.get("simd", [])) or "none of the listed"),
            ("platform", machine.get("platform")), ("python", now["python"]),
            *[(name, v) for name, v in now["versions"].items()],
            ("git revision (report)", now["git_revision"]), ("report written (UTC)", now["utc_time"])]
    parts = ["<table><tbody>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                                        for k, v in rows) + "</tbody></table>"]
    runs = []
    for path in _files(run, "config.json"):
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for p in stored.get("provenance", []) if isinstance(stored, dict) else []:
            m = p.get("machine", {})
            versions = ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items())
            runs.append(f"<tr><td>{html.escape(_experiment_of(run, path))}</td><td>{html.escape(str(p.get('utc_time')))}"
                        f"</td><td><code>{html.escape(str(p.get('git_revision')))}</code></td><td>"
                        f"{html.escape(str(m.get('cpu_model')))} ({html.escape(', '.join(m.get('simd', [])))})</td>"
                        f"<td>{html.escape(versions)}</td></tr>")
    if runs:
        parts.append("<h3>Runs that wrote this folder (config.json provenance)</h3><table><thead><tr><th>experiment"
                     "</th><th>UTC</th><th>git revision</th><th>CPU (SIMD)</th><th>versions</th></tr></thead><tbody>"
                     + "".join(runs) + "</tbody></table>")
    return "\n".join(parts)


def _recipes(records: list[dict[str, Any]]) -> str:
    by_model: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for r in records:
        recipe = r.get("recipe")
        if not isinstance(recipe, dict) or r.get("error"):
            continue
        text = json.dumps(recipe, indent=1, sort_keys=True)
        by_model[str(r.get("model", "?"))].setdefault(text, [])
        label = f"{r['experiment']}: {variant_label(r)}"
        if label not in by_model[str(r.get("model", "?"))][text]:
            by_model[str(r.get("model", "?"))][text].append(label)
    if not by_model:
        return "<p>No record of this run carries a recipe.</p>"
    parts = ["<p>One row per distinct recipe (fields that are null left out), with every variant that used it.</p>"]
    for model, recipes in by_model.items():
        rows = []
        for text, labels in recipes.items():
            fields = {k: v for k, v in json.loads(text).items() if v is not None}
            rows.append(f"<tr><td>{html.escape(', '.join(labels))}</td><td><code>"
                        f"{html.escape(json.dumps(fields, sort_keys=True))}</code></td></tr>")
        parts.append(f"<details open><summary><strong>{html.escape(model)}</strong> ({len(recipes)} recipes)</summary>"
                     "<table><thead><tr><th>variants</th><th>recipe</th></tr></thead><tbody>" + "".join(rows)
                     + "</tbody></table></details>")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
thead th{background:#f2f2f2}
code{background:#f5f5f5;padding:0 .2em}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:.8em}
figure{margin:.5em 0;display:inline-block}
img{max-width:100%}
nav a{margin-right:1em}
section.table{overflow-x:auto}
"""


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Writes ``<run_dir>/report.html`` (and ``<run_dir>/pareto/*.png``); returns the report path.

    Raises:
      TfquantError: ``run_dir`` is not a folder, or holds no results (no .md table and no
        .jsonl records).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise TfquantError(f"run folder {str(run)!r} not found; pass a results/<run> folder, e.g. results/default")
    tables = [p for p in _files(run, "*.md")]
    records = load_run_records(run)
    if not tables and not records:
        raise TfquantError(f"{str(run)!r} holds no results (no results.md, no results.jsonl); run an experiment "
                           "into it first, e.g. ./run_all.sh")
    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)

    body = []
    for path in tables:
        rel = str(path.relative_to(run))
        body.append(f'<section class="table"><p class="src">from <code>{html.escape(rel)}</code></p>'
                    f"{to_html(path.read_text(), heading_offset=2)}</section>")
    sections.append(("tables", "Tables", "\n".join(body) or "<p>No tables.</p>"))

    pareto_html = []
    pareto_dir = run / PARETO_DIR
    for model, kinds in sorted(pareto_points(records).items()):
        for kind, cost_label, log_x in (("size", "size (MiB)", False), ("latency", "latency, median (ms)", True)):
            points = kinds[kind]
            if not points:
                continue
            png = plots.pareto_plot(model, points, cost_label=cost_label, log_x=log_x)
            write_bytes_atomic(pareto_dir / f"{model}_{kind}.png", png)
            front = plots.pareto_front(points)
            pareto_html.append(_img(png, f"{model} accuracy vs {kind}") + "<p>Pareto front: "
                               + inline(", ".join(f"`{p.label}` ({p.group})" for p in front)) + "</p>")
    sections.append(("pareto", "Accuracy vs size and latency (Pareto fronts)",
                     "<p>Every variant of each model measured in the LiteRT interpreter by any experiment of the run "
                     "(marker = experiment). Red: the Pareto front (no other variant is both at least as accurate "
                     "and at most as costly), over the variants evaluated on the most test images; variants "
                     "evaluated on fewer (short runs) are grey crosses, off the front, since their accuracy is on "
                     f"another subset. Also written to <code>{PARETO_DIR}/&lt;model&gt;_size.png</code> and "
                     "<code>_latency.png</code>.</p>" + ("\n".join(pareto_html) or
                                                          "<p>No record with both accuracy and size.</p>")))

    cal_html = [_img(plots.calibrator_plot(f"Calibrators, {mode}", acc, floats), f"calibrators {mode}")
                for mode, (acc, floats) in sorted(calibrator_tables(records).items())]
    if cal_html:
        sections.append(("calibrators", "Calibrator comparison", "\n".join(cal_html)))

    sens_html = []
    for path, layers in sensitivity_reports(run):
        rel = str(path.relative_to(run))
        sens_html.append(_img(plots.sensitivity_plot(f"Per-layer sensitivity ({rel})", layers), f"sensitivity {rel}"))
    if sens_html:
        sections.append(("sensitivity", "Per-layer sensitivity", "\n".join(sens_html)))

    sections.append(("environment", "Environment", _environment(run)))
    sections.append(("recipes", "Recipes", _recipes(records)))

    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in sections)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tfquant run "
            f"{html.escape(run.name)}</title><style>{_CSS}</style></head><body>\n<h1>tfquant run "
            f"<code>{html.escape(run.name)}</code></h1><nav>{nav}</nav>\n"
            + "\n".join(f'<h2 id="{a}">{html.escape(t)}</h2>\n{h}' for a, t, h in sections)
            + "\n</body></html>\n")
    out = run / REPORT_HTML
    write_text_atomic(out, page)
    return out
