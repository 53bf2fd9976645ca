"""Provenance of a run: git revision, library versions, machine, time."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = (
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "numpy",
)


def git_revision(repo: str | os.PathLike[str] | None = None) -> str | None:
    """The checkout's HEAD commit (with '+dirty' when the tree has changes), or None."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


_SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "neon", "asimddp")


def _cpu() -> dict[str, Any]:
    """CPU model and the SIMD features that decide int8 vs float speed (Linux; else {})."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith(("model name", "Model"))), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    return {"cpu_model": model, "simd": [f for f in _SIMD_FLAGS if f in flags]}


def provenance() -> dict[str, Any]:
    """What produced a result: code revision, library versions, machine, UTC time."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_revision": git_revision(),
        "versions": versions,
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), **_cpu()},
        "utc_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def adds_models(previous: dict[str, Any], fingerprint: dict[str, Any]) -> bool:
    """True when ``fingerprint`` is the ``previous`` run's with more zoo models (rows) and
    nothing else changed: the same keys, the same config but for ``models`` (every old model
    kept, in its order, new ones after it), the same ``weights_sha256`` for every old model and
    every other entry equal. A zoo study measures each model on its own, so the old models'
    records stay valid and only the new models' cells are left to run."""
    old_cfg, new_cfg = previous.get("config"), fingerprint.get("config")
    if not isinstance(old_cfg, dict) or not isinstance(new_cfg, dict):
        return False
    old_models, new_models = old_cfg.get("models"), new_cfg.get("models")
    if not isinstance(old_models, list) or not isinstance(new_models, list):
        return False
    if new_models[:len(old_models)] != old_models or len(new_models) == len(old_models):
        return False
    if set(previous) - {"provenance"} != set(fingerprint):
        return False
    if {**old_cfg, "models": None} != {**new_cfg, "models": None}:
        return False
    for key in fingerprint:
        if key == "config":
            continue
        if key == "weights_sha256":
            old_w, new_w = previous.get(key), fingerprint[key]
            if not isinstance(old_w, dict) or any(old_w.get(m) != new_w.get(m) for m in old_models):
                return False
        elif previous.get(key) != fingerprint[key]:
            return False
    return True


def open_run(out: "str | os.PathLike[str]", fingerprint: dict[str, Any]) -> None:
    """Starts or resumes a run folder: writes ``config.json``, or checks it matches.

    ``fingerprint`` (config, weights' hashes, ...) must equal the one stored by the run that
    created the folder, so that an interrupted run resumes only into a run with the same
    settings; each invocation appends its :func:`provenance` to the stored list. The one
    accepted change is more models appended to the list (:func:`adds_models`): the folder is
    extended, the stored fingerprint becomes the new one and only the new models' cells run.

    Raises:
      TfquantError: the folder holds a run with a different fingerprint, or a corrupt config.json.
    """
    import json

    from tfquant.errors import TfquantError
    from tfquant.io_utils import write_json_atomic

    out = Path(out)
    config_path = out / "config.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored
    runs = [provenance()]
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            previous = None
        if not isinstance(previous, dict):
            raise TfquantError(
                f"{str(config_path)!r} is corrupt (not the JSON object a run writes), so the run "
                "cannot be resumed; pass a new --run_name or delete that folder"
            )
        changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        if changed and adds_models(previous, fingerprint):
            changed = []
        if changed:
            raise TfquantError(
                f"{str(out)!r} holds a run with a different {' and '.join(changed)}, so it "
                "cannot be resumed; pass a new --run_name or delete that folder"
            )
        old_runs = previous.get("provenance", [])
        runs = (old_runs if isinstance(old_runs, list) else []) + runs
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, {**fingerprint, "provenance": runs})
