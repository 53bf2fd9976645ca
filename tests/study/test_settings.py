"""Shared zoo-study settings: validation names the bad value; config.json data is JSON-ready."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar, Mapping

import pytest

from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.study.settings import ZooStudySettings, interpreter_runtime


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Config(ZooStudySettings):
    runtime: Runtime = Runtime.XNNPACK
    modes: tuple[str, ...] = ("int8",)


@pytest.mark.parametrize("kwargs, match", [
    (dict(models=()), "no models"),
    (dict(models=("cnn",), workers=0), "workers must be a positive integer, got 0"),
    (dict(models=("cnn",), threads=True), "threads must be a positive integer, got True"),
    (dict(models=("cnn",), limit=0), "limit must be a positive integer or None"),
])
def test_bad_settings_are_rejected_with_the_value(kwargs, match) -> None:
    with pytest.raises(TfquantError, match=match):
        _Config(**kwargs)


def test_a_study_never_runs_a_device_delegate() -> None:
    assert interpreter_runtime("builtin", what="x") is Runtime.BUILTIN
    with pytest.raises(TfquantError, match="the sweep: runtime xnnpack or builtin only"):
        interpreter_runtime("delegate", what="the sweep")


def test_to_dict_is_json_data_with_enum_values() -> None:
    d = _Config(models=["cnn"]).to_dict()
    assert d["models"] == ["cnn"] and d["runtime"] == "xnnpack" and d["modes"] == ["int8"]
    assert json.loads(json.dumps(d)) == d


def test_positive_int_none_means_and_numpy_integers() -> None:
    import numpy as np

    from tfquant.study.settings import positive_int

    positive_int(np.int64(3), "n")
    positive_int(None, "limit", none_means="whole test split")
    with pytest.raises(TfquantError, match=r"limit must be a positive integer or None \(whole test split\), got 0"):
        positive_int(0, "limit", none_means="whole test split")
    for bad in (None, True, 1.0, 0):
        with pytest.raises(TfquantError, match="n must be a positive integer, got"):
            positive_int(bad, "n")


def test_sized_configs_by_name_with_overrides() -> None:
    from tfquant.study.settings import Sized

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(Sized):
        sizes: ClassVar[Mapping[str, Mapping[str, int]]] = {"smoke": {"a": 1, "b": 2}}
        a: int = 0
        b: int = 0

    assert Config.of_size("smoke", b=5) == Config(a=1, b=5)
    with pytest.raises(TfquantError, match="unknown size 'huge'; choose from: smoke"):
        Config.of_size("huge")


def test_zoo_fingerprint_holds_config_cells_and_weights(monkeypatch) -> None:
    from tfquant import models
    from tfquant.study.settings import zoo_fingerprint

    monkeypatch.setattr(models, "trained_info", lambda m: {"weights_sha256": f"sha-{m}"})
    assert zoo_fingerprint({"x": 1}, ["cnn"]) == {"config": {"x": 1}, "weights_sha256": {"cnn": "sha-cnn"}}
    fp = zoo_fingerprint({"x": 1}, ["cnn"], {"float": {"table": "A"}})
    assert list(fp) == ["config", "cells", "weights_sha256"] and fp["cells"] == {"float": {"table": "A"}}
