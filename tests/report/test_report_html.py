"""The run report: built from a small real run folder and rendered in headless Chromium.

The run folder is made here: a tiny Keras CNN (random weights, Fashion-MNIST-shaped random
data) converted by tfquant to fp32 / dynamic / int8 and measured in the LiteRT interpreter
(accuracy, size, latency), written as an experiment's results.jsonl + results.md, plus a
sensitivity report in the ``layers`` shape of ``python -m tfquant sensitivity``. The browser
test needs Debian's ``chromium`` (``apt-get install chromium``; ``./run_all.sh --tests``
installs it when run as root); without it the test fails and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.report import PARETO_DIR, REPORT_HTML, Point, build_report, pareto_front
from tfquant.report.markdown_html import to_html

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _tiny_run(root: Path) -> Path:
    import tensorflow as tf

    from tfquant import convert
    from tfquant.evaluation import evaluate_accuracy, file_size, markdown_table, measure_latency
    from tfquant.recipes import variant

    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.random((60, 12, 12, 1), dtype=np.float32)
    y = model.predict(x, verbose=0).argmax(1)  # labels the float model gets right: accuracies differ by mode
    run = root / "tiny_run"
    exp = run / "tiny_study"
    records: list[dict[str, Any]] = []
    for name in ("fp32", "dynamic", "int8_per_channel"):
        recipe = variant(name).replace(num_calibration_examples=20) if name.startswith("int8") else variant(name)
        path = exp / "models" / "tiny" / f"{name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        convert.save(convert.convert(model, recipe, calibration_data=x[:20]), str(path), recipe)
        for runtime in ("xnnpack", "builtin"):
            acc = evaluate_accuracy(str(path), x, y, runtime=runtime)
            lat = measure_latency(str(path), runtime=runtime, warmup=2, runs=10)
            records.append({"experiment": "tiny_study", "model": "tiny", "variant": name, "runtime": runtime,
                            "threads": 1, "executed_in": "tflite", "accuracy": acc.accuracy,
                            "n_examples": acc.n_examples, "size_bytes": file_size(path),
                            "latency_ms_median": lat.median_ms, "recipe": recipe.to_dict()})
    records.append({"experiment": "tiny_study", "model": "tiny", "mode": "float", "column": "float",
                    "executed_in": "tflite", "accuracy": records[0]["accuracy"]})
    records.append({"experiment": "tiny_study", "model": "tiny", "mode": "int8", "column": "converter",
                    "executed_in": "tflite", "accuracy": records[-2]["accuracy"]})
    (exp / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = markdown_table([r for r in records if "variant" in r],
                           ["variant", "runtime", "accuracy", "size_bytes", "latency_ms_median"])
    (exp / "results.md").write_text(f"# Tiny study table\n\nEvery cell ran in `tflite`.\n\n{table}")
    layers = [{"name": layer.name, "op": type(layer).__name__, "accuracy_drop": 0.01 * (i + 1), "sqnr_db": 30.0}
              for i, layer in enumerate(model.layers)]
    (run / "sensitivity").mkdir()
    (run / "sensitivity" / "REPORT.json").write_text(json.dumps({"layers": layers[::-1]}))
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(_tiny_run(tmp_path_factory.mktemp("report")))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_holds_tables_plots_environment_and_recipes(report: Path) -> None:
    text = report.read_text()
    assert report.name == REPORT_HTML
    assert "<h3>Tiny study table</h3>" in text and "<table>" in text
    for section in ("Pareto", "Calibrator comparison", "Per-layer sensitivity", "Environment", "Recipes"):
        assert section in text, section
    assert "int8_per_channel" in text and "&quot;" not in text.split('id="recipes"')[1][:200]
    assert re.search(r"SIMD features</th><td>", text)
    # self-contained: every image is an inline PNG, nothing is fetched
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(srcs) == 4  # size + latency Pareto, calibrators, sensitivity
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    for kind in ("size", "latency"):
        w, h = _png_size((report.parent / PARETO_DIR / f"tiny_{kind}.png").read_bytes())
        assert w > 100 and h > 100


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed, so the report cannot be checked in a browser; install it with "
                "'apt-get install -y chromium' (./run_all.sh --tests does this when run as root)")


def test_report_images_load_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """A copy of the report with a script that writes each <img>'s naturalWidth into the DOM
    once the page has loaded; Chromium's --dump-dom prints the DOM after that."""
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { const r = document.createElement('pre');"
              " r.id = 'img-check'; r.textContent = JSON.stringify(Array.from(document.images,"
              " i => [i.complete, i.naturalWidth, i.naturalHeight])); document.body.appendChild(r); });</script>")
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    profile = tmp_path / "profile"
    profile.mkdir()
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="img-check">(.*?)</pre>', out.stdout)
    assert match, f"no image check in Chromium's DOM (exit {out.returncode}): {out.stderr[-2000:]}"
    images = json.loads(match.group(1))
    assert len(images) == 4
    for complete, width, height in images:
        assert complete and width > 100 and height > 100


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    rng = np.random.default_rng(1)
    points = [Point(str(i), float(a), float(c)) for i, (a, c) in enumerate(rng.random((40, 2)))]
    points += [Point("dup", points[0].accuracy, points[0].cost)]
    front = pareto_front(points)

    def dominates(q: Point, p: Point) -> bool:
        return q.accuracy >= p.accuracy and q.cost <= p.cost and (q.accuracy, q.cost) != (p.accuracy, p.cost)

    assert all(not dominates(q, p) for p in front for q in points)
    assert all(any(dominates(q, p) or (q.accuracy, q.cost) == (p.accuracy, p.cost) for q in front)
               for p in points)
    assert [p.cost for p in front] == sorted(p.cost for p in front)
    assert len({(p.accuracy, p.cost) for p in front}) == len(front)


def test_markdown_tables_and_inline_markup_become_html() -> None:
    html = to_html("# T\n\nA **b** `c<d>` *e*.\n\n| m | acc |\n|:---|---:|\n| x | 0.9 |\n\n- one\n- two\n",
                   heading_offset=1)
    assert "<h2>T</h2>" in html
    assert "<strong>b</strong>" in html and "<code>c&lt;d&gt;</code>" in html and "<em>e</em>" in html
    assert "<th>m</th><th>acc</th>" in html and '<td style="text-align:right">0.9</td>' in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert to_html("| a |\n|:---|\n| **0.91 =`max`** |").count("<strong>0.91 =<code>max</code></strong>") == 1


def test_report_of_a_missing_or_empty_folder_is_a_one_line_error(tmp_path: Path, capsys: Any) -> None:
    from tfquant.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run folder") and "\n" not in err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no results" in err and "\n" not in err
    assert not (tmp_path / REPORT_HTML).exists()
