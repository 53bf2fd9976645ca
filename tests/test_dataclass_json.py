"""The shared JSON checks of config dataclasses: every public raise, and the round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tfquant.dataclass_json import from_json_dict, loads_object, to_json_dict
from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity


@dataclasses.dataclass(frozen=True)
class _Inner:
    n: int

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n}


@dataclasses.dataclass(frozen=True)
class _Config:
    name: str
    granularity: Granularity = Granularity.PER_CHANNEL
    inner: _Inner | None = None


def test_to_json_dict_writes_enum_values_nested_dicts_and_the_version() -> None:
    d = to_json_dict(_Config("a", inner=_Inner(3)), version_key="v", version=2)
    assert d == {"v": 2, "name": "a", "granularity": "per_channel", "inner": {"n": 3}}
    assert json.loads(json.dumps(d)) == d
    assert "v" not in to_json_dict(_Config("a"))


def test_from_json_dict_drops_the_version_and_returns_the_fields() -> None:
    d = {"v": 2, "name": "a", "granularity": "per_tensor"}
    assert from_json_dict(_Config, d, what="config", version_key="v", version=2) == {
        "name": "a", "granularity": "per_tensor"
    }
    assert from_json_dict(_Config, {"name": "a"}, what="config", version_key="v", version=2) == {"name": "a"}
    assert d["v"] == 2  # the caller's mapping is not changed


@pytest.mark.parametrize(
    "data, message",
    [
        ([1], r"config must be an object \(a JSON object of config fields\), got list"),
        ({"v": 3, "name": "a"}, r"config: v 3 is not supported \(this tfquant reads 2\); re-create it"),
        ({"name": "a", "nmae": 1}, r"unknown config key\(s\) \['nmae'\]; allowed keys: \['granularity', 'inner', 'name'\]"),
        ({"granularity": "per_tensor"}, r"config has no 'name'; add it"),
    ],
)
def test_from_json_dict_names_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(TfquantError, match=message):
        from_json_dict(
            _Config, data, what="config", version_key="v", version=2, required=("name",),
            hint="re-create it",
        )


def test_loads_object_names_the_broken_file() -> None:
    assert loads_object('{"a": 1}', what="x") == {"a": 1}
    with pytest.raises(TfquantError, match=r"recipe is not valid JSON \(.*\); fix the file"):
        loads_object("{", what="recipe")
