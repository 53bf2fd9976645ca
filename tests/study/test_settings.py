"""Shared zoo-study settings: validation names the bad value; config.json data is JSON-ready."""

from __future__ import annotations

import dataclasses
import json

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
