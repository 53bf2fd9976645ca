"""The whitepaper's latency table on this CPU: keras.applications models, every TFLite mode,
XNNPACK and builtin kernels, 1 and 2 threads, timed side by side.

Krishnamoorthi 2018 ("Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv 1806.08342; ``methods.md`` section 1) reports int8 2-3x faster than float
on a phone CPU (Pixel 2 big core, MobileNet-v1 224: float 155 ms, int8 68 ms, 2.3x), about
10x on the Hexagon DSP, and 4x smaller models. This study asks which of those hold here.

Models: ``keras.applications`` MobileNet, MobileNetV2, ResNet50, InceptionV3 with **random
weights** (``weights=None``; nothing is downloaded); latency does not depend on the weights'
values, and each BatchNormalization takes its batch statistics on a few random images
(:func:`tfquant.models.keras_apps.set_batch_norm_statistics`) so that activations have
trained-like scales for int8 / int16x8 calibration. Each model is converted once per mode
(fp32, int8, dynamic, fp16, int16x8: the named variants of :mod:`tfquant.recipes.variants`
through :func:`tfquant.convert.convert`), then all of its (mode, runtime, threads) cells are
timed together in one process, interleaved
(:func:`tfquant.evaluation.interleaved.time_interleaved`), so that the speed-up ratios compare
runs made under the same load. One :class:`WhitepaperLatencyRecord` per cell, run and resumed
by :func:`tfquant.study.run_study` into ``<results_dir>/<run_name>/whitepaper_latency/``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode, Runtime
from tfquant.recipes import Recipe, variant
from tfquant.study import Footnotes, Record, RecordSet, Study, header, run_study, section
from tfquant.study.settings import Sized, json_ready, positive_int

NAME = "whitepaper_latency"

MODELS: Mapping[str, str] = MappingProxyType({
    "mobilenet": "keras_mobilenet",
    "mobilenet_v2": "keras_mobilenet_v2",
    "resnet50": "keras_resnet50",
    "inception_v3": "keras_inception_v3",
})
"""Row name -> :data:`tfquant.models.keras_apps.KERAS_APPS` key."""

MODE_VARIANTS: Mapping[str, str] = MappingProxyType({
    "fp32": "fp32", "int8": "int8_per_channel", "dynamic": "dynamic", "fp16": "fp16", "int16x8": "int16x8",
})
"""Mode (table row) -> the named variant it converts with."""

PAPER_INT8_SPEEDUP = (2.0, 3.0)
"""The whitepaper's "2-3x faster on CPU" for int8 over float (Pixel 2: 155 / 68 ms = 2.3x)."""
PAPER_SIZE_RATIO = 4.0
"""The whitepaper's "4x smaller" for int8 weights."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperLatencyConfig(Sized):
    """What the study times.

    Attributes:
      models: Rows, from :data:`MODELS`.
      input_size: Height = width of the inputs; None: each model's ImageNet size (224, 299).
      modes, runtimes, threads: The cells of each model (every combination).
      rounds, runs_per_round, warmup: Interleaved timing (see
        :func:`~tfquant.evaluation.interleaved.time_interleaved`).
      max_seconds: Timed seconds after which a cell stops (int16x8 on reference kernels).
      num_calibration_examples: Random images the int8 / int16x8 converter calibrates on.
      seed: Seed of the random images, the random weights and the round orders.
    """

    sizes = {
        "short": {"models": ("mobilenet",), "input_size": 96, "modes": ("fp32", "int8", "int16x8"), "rounds": 5,
                  "runs_per_round": 3, "warmup": 2, "max_seconds": 1.0, "num_calibration_examples": 4},
        "smoke": {"models": ("mobilenet",), "input_size": 32, "modes": ("fp32", "int8"), "threads": (1,),
                  "rounds": 2, "runs_per_round": 2, "warmup": 1, "max_seconds": 1.0, "num_calibration_examples": 2},
    }

    models: tuple[str, ...] = tuple(MODELS)
    input_size: int | None = None
    modes: tuple[str, ...] = tuple(MODE_VARIANTS)
    runtimes: tuple[Runtime, ...] = (Runtime.XNNPACK, Runtime.BUILTIN)
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 10
    runs_per_round: int = 5
    warmup: int = 3
    max_seconds: float = 20.0
    num_calibration_examples: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for field, allowed in (("models", MODELS), ("modes", MODE_VARIANTS)):
            values = tuple(getattr(self, field))
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise TfquantError(f"unknown or no {field} {unknown}; choose from: {', '.join(allowed)}")
            object.__setattr__(self, field, values)
        runtimes = tuple(Runtime.parse(r, what="runtime") for r in self.runtimes)
        if Runtime.DELEGATE in runtimes or not runtimes:
            raise TfquantError("runtimes: xnnpack and/or builtin")
        object.__setattr__(self, "runtimes", runtimes)
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        for t in self.threads:
            positive_int(t, "threads")
        for name in ("rounds", "runs_per_round", "warmup", "num_calibration_examples"):
            positive_int(getattr(self, name), name)
        positive_int(self.input_size, "input_size", none_means="each model's ImageNet size")
        if self.input_size is not None and self.input_size < 75 and "inception_v3" in self.models:
            raise TfquantError(f"inception_v3 needs input_size >= 75, got {self.input_size}; pass a larger one")
        if self.input_size is not None and self.input_size < 32:
            raise TfquantError(f"input_size must be >= 32 (the MobileNets' minimum), got {self.input_size}")
        if not self.max_seconds > 0:
            raise TfquantError(f"max_seconds must be > 0, got {self.max_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))

    def recipe(self, mode: str) -> Recipe:
        recipe = variant(MODE_VARIANTS[mode])
        if recipe.mode.needs_calibration:
            recipe = recipe.replace(num_calibration_examples=self.num_calibration_examples,
                                    calibration_seed=self.seed, calibration_data="random_uniform")
        return recipe


@dataclasses.dataclass(frozen=True)
class LatencyCell:
    """One cell: ``model`` in ``mode`` under ``runtime`` with ``threads`` interpreter threads."""

    model: str
    mode: str
    runtime: str
    threads: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.mode, self.runtime, self.threads)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperLatencyRecord(Record):
    """What one cell measured (field names are the results.jsonl keys; latency fields as the
    evaluator's). Speed-ups are side by side (same process, interleaved rounds):
    ``speedup_vs_fp32``: fp32's time / this cell's, same runtime and threads;
    ``speedup_vs_builtin``: builtin's time / this cell's (xnnpack rows), same mode and threads;
    ``speedup_vs_1_thread``: 1 thread's time / this cell's, same mode and runtime.
    ``speedup_vs_fp32_min``: fp32's fastest run / this cell's fastest (load only adds time, so
    on a busy machine the minima are the steadier estimate).
    ``bounded``: timing stopped at ``max_seconds`` (``latency_runs`` says how many ran)."""

    experiment: str
    model: str
    mode: str
    runtime: str
    threads: int
    executed_in: str = "tflite"
    weights: str = "random"
    input_shape: list[int] | None = None
    tflite_path: str | None = None
    recipe: dict[str, Any] | None = None
    size_bytes: int | None = None
    convert_seconds: float | None = None
    delegated_ops: int | None = None
    total_ops: int | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_min: float | None = None
    latency_runs: int | None = None
    bounded: bool | None = None
    speedup_vs_fp32: float | None = None
    speedup_vs_builtin: float | None = None
    speedup_vs_1_thread: float | None = None
    speedup_vs_fp32_min: float | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.mode, self.runtime, self.threads)


class WhitepaperLatency(Study[LatencyCell, WhitepaperLatencyRecord]):
    """The latency study (module docstring); the .tflite files go to ``<out>/models/<model>/``."""

    name = NAME
    record_type = WhitepaperLatencyRecord

    def __init__(self, config: WhitepaperLatencyConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        return {"config": self.config.to_dict()}

    def cells(self) -> list[LatencyCell]:
        c = self.config
        return [LatencyCell(m, mode, r.value, t) for m in c.models for mode in c.modes
                for r in c.runtimes for t in c.threads]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def measure(self, todo: Sequence[LatencyCell], log: Callable[[str], None]) -> Iterator[WhitepaperLatencyRecord]:
        todo_models = {c.model for c in todo}
        for model in _progress.progress([m for m in self.config.models if m in todo_models],
                                        desc="whitepaper latency", unit="model"):
            yield from self._measure_model(model, log)

    def _measure_model(self, model_name: str, log: Callable[[str], None]) -> Iterator[WhitepaperLatencyRecord]:
        """Converts ``model_name`` in every mode, then times all its cells side by side (all
        are yielded; the runner keeps only those not done yet)."""
        import numpy as np

        from tfquant import convert
        from tfquant.evaluation.interleaved import speedup, time_interleaved
        from tfquant.evaluation.interpreter import count_delegated_nodes, file_size, load_interpreter
        from tfquant.evaluation.runner import BatchRunner
        from tfquant.models.keras_apps import KERAS_APPS, build_keras_app, set_batch_norm_statistics

        config = self.config
        size = config.input_size
        shape = KERAS_APPS[MODELS[model_name]].default_input_shape if size is None else (size, size, 3)
        rng = np.random.default_rng(config.seed)
        keras_model = build_keras_app(MODELS[model_name], weights_path=None, input_shape=shape)
        x_cal = rng.uniform(-1.0, 1.0, (config.num_calibration_examples, *shape)).astype(np.float32)
        set_batch_norm_statistics(keras_model, x_cal)
        base = {"experiment": NAME, "model": model_name, "input_shape": list(shape)}
        converted: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        for mode in config.modes:
            recipe = config.recipe(mode)
            path = self.models_dir / model_name / f"{mode}.tflite"
            start = time.perf_counter()
            try:
                tflite = convert.convert(keras_model, recipe, calibration_data=x_cal)
            except TfquantError as e:
                log(f"{model_name:>13} {mode:<8} not converted: {e}")
                failed[mode] = str(e)
                continue
            convert.save(tflite, str(path), recipe)
            converted[mode] = {"tflite_path": str(path), "recipe": recipe.to_dict(), "size_bytes": file_size(path),
                               "convert_seconds": round(time.perf_counter() - start, 3)}
            log(f"{model_name:>13} {mode:<8} converted: {converted[mode]['size_bytes'] / 2**20:.1f} MiB")
        del keras_model
        sample = rng.uniform(-1.0, 1.0, (1, *shape)).astype(np.float32)
        invokes, counts = {}, {}
        for cell in self.cells():
            if cell.model != model_name or cell.mode not in converted:
                continue
            interpreter = load_interpreter(converted[cell.mode]["tflite_path"], runtime=cell.runtime,
                                           num_threads=cell.threads)
            runner = BatchRunner(interpreter, label=f"{model_name} {cell.mode}")
            runner.invoke(sample)  # sets the input once; a model that cannot run fails here
            invokes[cell.key] = interpreter.invoke
            counts[cell.key] = count_delegated_nodes(interpreter)
        log(f"{model_name:>13} timing {len(invokes)} cells side by side ({config.rounds} rounds)")
        times = time_interleaved(invokes, rounds=config.rounds, runs_per_round=config.runs_per_round,
                                 warmup=config.warmup, max_seconds=config.max_seconds, seed=config.seed)
        for cell in self.cells():
            if cell.model != model_name:
                continue
            rec = {**base, "mode": cell.mode, "runtime": cell.runtime, "threads": cell.threads}
            if cell.mode in failed:
                yield WhitepaperLatencyRecord(**rec, error=failed[cell.mode])
                continue
            t = times[cell.key]
            others = {
                "speedup_vs_fp32": (model_name, "fp32", cell.runtime, cell.threads),
                "speedup_vs_builtin": (model_name, cell.mode, Runtime.BUILTIN.value, cell.threads),
                "speedup_vs_1_thread": (model_name, cell.mode, cell.runtime, 1),
            }
            ratios = {name: (None if key == cell.key or key not in times else _round(speedup(t, times[key])))
                      for name, key in others.items()}
            fp32_key = (model_name, "fp32", cell.runtime, cell.threads)
            if fp32_key in times and fp32_key != cell.key:
                ratios["speedup_vs_fp32_min"] = round(times[fp32_key].min_ms / t.min_ms, 3)
            delegated, total = counts[cell.key]
            yield WhitepaperLatencyRecord(
                **rec, **converted[cell.mode], delegated_ops=delegated, total_ops=total,
                latency_ms_median=round(t.median_ms, 4), latency_ms_p90=round(t.p90_ms, 4),
                latency_ms_min=round(t.min_ms, 4), latency_runs=t.runs, bounded=t.bounded, **ratios)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_whitepaper_latency(
    config: WhitepaperLatencyConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run."""
    return run_study(WhitepaperLatency(config), Path(out_dir), log=log)


def cpu_features() -> dict[str, Any]:
    """This CPU's model name and the SIMD flags that decide int8 vs float speed (/proc/cpuinfo)."""
    from tfquant.study.provenance import provenance

    machine = provenance()["machine"]
    return {"cpu_model": machine.get("cpu_model"), "simd": machine.get("simd", []), "cpus": machine.get("cpus")}


def _ms(r: Any) -> str:
    text = f"{r.latency_ms_median:.2f} / {r.latency_ms_p90:.2f}"
    return text + ("†" if r.bounded else "")


def results_markdown(records: RecordSet, config: WhitepaperLatencyConfig) -> str:
    """One table per model (rows: modes; columns: runtime x threads) and the paper check."""
    from tfquant.evaluation import markdown_table

    cpu = cpu_features()
    size = "each model's ImageNet size" if config.input_size is None else f"{config.input_size}x{config.input_size}"
    lines = header(
        "Whitepaper latency table on this CPU",
        f"Single-image latency in ms, **median / p90**, and in brackets the speed-up over fp32 under the "
        f"same runtime and threads. keras.applications models with **random weights** (`weights=None`; "
        f"latency does not depend on the weights' values), input {size}. Every cell ran in the LiteRT "
        f"interpreter (`executed_in: tflite`); no cell is simulated. The cells of one model were timed "
        f"side by side in one process ({config.rounds} interleaved rounds of {config.runs_per_round} "
        f"invokes, shuffled order per round), so each speed-up is the median over rounds of the per-round "
        f"ratio. †: bounded at {config.max_seconds:g} s of timed invokes (int16x8 on reference kernels); "
        f"`latency_runs` in results.jsonl says how many ran. `deleg.`: ops XNNPACK took / all ops. "
        f"CPU: {cpu['cpu_model']} ({cpu['cpus']} cores shared with other work), SIMD: "
        f"{', '.join(cpu['simd']) or 'none of the listed'}.")
    notes = Footnotes()
    combos = [(r.value, t) for r in config.runtimes for t in config.threads]
    unmeasured = [m for m in config.models if not any(r.key[0] == m for r in records)]
    for model in config.models:
        if model in unmeasured:
            continue
        columns = ["mode", "size MiB", *[f"{r} {t}T" for r, t in combos], "deleg."]
        rows = []
        for mode in config.modes:
            row: dict[str, Any] = {"mode": mode}
            for r, t in combos:
                rec = records.get((model, mode, r, t))
                if rec is None:
                    continue
                if rec.failed:
                    row[f"{r} {t}T"] = notes.failed(f"{model} / {mode}", rec.error)
                    continue
                row["size MiB"] = f"{rec.size_bytes / 2**20:.1f}"
                ratio = "" if mode == "fp32" or rec.speedup_vs_fp32 is None else f" ({rec.speedup_vs_fp32:.2f}x)"
                row[f"{r} {t}T"] = _ms(rec) + ratio
                if r == Runtime.XNNPACK.value and t == config.threads[0]:
                    row["deleg."] = f"{rec.delegated_ops}/{rec.total_ops}"
            rows.append(row)
        lines += ["", f"## {model}", "", markdown_table(rows, columns).rstrip("\n")]
    if unmeasured:
        lines += ["", f"Not measured yet (an interrupted run resumes where it stopped): {', '.join(unmeasured)}."]
    lines += paper_check(records, config, cpu)
    return "\n".join(lines + notes.lines()) + "\n"


def _values(records: RecordSet, config: WhitepaperLatencyConfig, mode: str, runtime: str, threads: int,
            field: str) -> dict[str, float]:
    out = {}
    for m in config.models:
        r = records.ok((m, mode, runtime, threads))
        if r is not None and getattr(r, field) is not None:
            out[m] = getattr(r, field)
    return out


def _listing(values: Mapping[str, float], fmt: str = "{:.2f}x") -> str:
    return ", ".join(f"{m} {fmt.format(v)}" for m, v in values.items()) or "not measured"


def paper_check(records: RecordSet, config: WhitepaperLatencyConfig, cpu: Mapping[str, Any]) -> list[str]:
    """Which of the paper's speed-ups hold on this CPU, from the records, and why."""
    x, b = Runtime.XNNPACK.value, Runtime.BUILTIN.value
    t1 = config.threads[0]
    simd = set(cpu["simd"])
    int8_x = _values(records, config, "int8", x, t1, "speedup_vs_fp32")
    int8_b = _values(records, config, "int8", b, t1, "speedup_vs_fp32")
    int8_min = _values(records, config, "int8", x, t1, "speedup_vs_fp32_min")
    lo, hi = PAPER_INT8_SPEEDUP
    held = [m for m, v in int8_x.items() if v >= lo]
    verdict = ("held" if int8_x and len(held) == len(int8_x) else "partly" if held else
               "did not hold" if int8_x else "not tested")
    vnni = "avx512_vnni" in simd or "avx_vnni" in simd
    if vnni:
        isa = ("This CPU has VNNI (`avx512_vnni`/`avx_vnni`): one `vpdpbusd` does 4x as many 8-bit multiply-adds as "
               "one float FMA does float ones at the same vector width, and XNNPACK picks its QS8 VNNI "
               "microkernels at run time when the flag is present.")
    elif "avx2" in simd:
        isa = ("This CPU has AVX2 but no VNNI: an int8 dot product takes a `vpmaddubsw` + `vpmaddwd` + `vpaddd` "
               "sequence, so int8 has little arithmetic advantage over float FMAs; what int8 saves is memory traffic.")
    else:
        isa = "This CPU has neither AVX2 nor VNNI (per /proc/cpuinfo)."
    isa += (" The paper's Pixel 2 core (Cortex-A73, ARMv8.0 NEON without `sdot`) multiplies int8 through widening "
            "16-bit multiply-adds, about 2x the float rate, plus 4x less memory traffic: hence its 2.3x. With "
            "VNNI the arithmetic gap is 4x, so int8 can beat the paper's range here.")
    sizes = {}
    for m in config.models:
        f, q = records.ok((m, "fp32", x, t1)), records.ok((m, "int8", x, t1))
        if f is not None and q is not None:
            sizes[m] = f.size_bytes / q.size_bytes
    i16 = _values(records, config, "int16x8", x, t1, "speedup_vs_fp32")
    i16_deleg = {m: r.delegated_ops for m in config.models
                 if (r := records.ok((m, "int16x8", x, t1))) is not None}
    dyn = _values(records, config, "dynamic", x, t1, "speedup_vs_fp32")
    fp16 = _values(records, config, "fp16", x, t1, "speedup_vs_fp32")
    threads = _values(records, config, "int8", x, config.threads[-1], "speedup_vs_1_thread") \
        if len(config.threads) > 1 else {}
    threads_text = (f"; int8 on {config.threads[-1]} threads vs {t1}: {_listing(threads)} (2 threads can only help "
                    "when a second core is idle)") if threads else ""
    xnn_vs_builtin = _values(records, config, "fp32", x, t1, "speedup_vs_builtin")
    costs = []
    if "int16x8" in config.modes:
        costs.append(
            f"**int16x8** vs fp32 under XNNPACK: {_listing(i16)} (XNNPACK took {_listing(i16_deleg, '{} ops')}: "
            "it has no 16-bit-activation operators, and LiteRT's int16x8 kernels are mostly its reference "
            "implementations, so the model runs unvectorised reference code under either runtime)")
    if "dynamic" in config.modes:
        costs.append(f"**dynamic range** (int8 weights, float activations): {_listing(dyn)} (the builtin hybrid "
                     "kernels quantize activations on the fly)")
    if "fp16" in config.modes:
        costs.append(f"**fp16** weights: {_listing(fp16)} (the DEQUANTIZE ops turn them into float32 when the "
                     "model loads, so the kernels are fp32's and about 1x is expected; anything else is noise)")
    costs.append(f"XNNPACK vs builtin on fp32: {_listing(xnn_vs_builtin)}" + threads_text)
    return section(
        "Which of the paper's speed-ups hold on this CPU",
        f"- **int8 {lo:g}-{hi:g}x faster than float on CPU** (Pixel 2, MobileNet-v1: 155 -> 68 ms, 2.3x): "
        f"**{verdict}** under XNNPACK, {t1} thread: {_listing(int8_x)} (fastest run vs fastest run: "
        f"{_listing(int8_min)}); under the builtin kernels: {_listing(int8_b)}. {isa}",
        f"- **4x smaller**: fp32 size / int8 size: {_listing(sizes)} (int8 weights are 4x smaller; biases stay "
        "int32 and per-channel scales add a little, so slightly under 4x).",
        "- **~10x on the Hexagon DSP**: not testable on this machine (no DSP); see `python -m tfquant benchmark` "
        "for a phone.",
        "- Not in the paper, but what it costs here: " + "; ".join(costs) + ".",
    )
