"""Dataset spec strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfquant import data
from tfquant.data.spec import FashionMnistSpec, FolderSpec, NpzSpec, TfdsSpec, parse_spec
from tfquant.errors import TfquantError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fashion_mnist", FashionMnistSpec()),
        (" fashion_mnist ", FashionMnistSpec()),
        ("tfds:cifar10", TfdsSpec("cifar10")),
        ("tfds:imagenet2012_subset/10pct", TfdsSpec("imagenet2012_subset", "10pct")),
        ("tfds:imagenet2012_subset:10pct", TfdsSpec("imagenet2012_subset", "10pct")),
        ("tfds:mnist:3.0.1", TfdsSpec("mnist", None, "3.0.1")),
        ("tfds:cifar10_c/brightness_1:1.*.*", TfdsSpec("cifar10_c", "brightness_1", "1.*.*")),
        ("tfds:cifar10_c:brightness_1:1.0.0", TfdsSpec("cifar10_c", "brightness_1", "1.0.0")),
        ("npz:/data/calib.npz", NpzSpec(Path("/data/calib.npz"))),
        ("npz:rel/c:d.npz", NpzSpec(Path("rel/c:d.npz"))),
        ("folder:/data/imgs", FolderSpec(Path("/data/imgs"))),
    ],
)
def test_parse_forms(text: str, expected: object) -> None:
    assert parse_spec(text) == expected


def test_tfds_name_round_trips() -> None:
    assert parse_spec("tfds:a_b/c:1.0.0").tfds_name == "a_b/c:1.0.0"  # type: ignore[union-attr]
    assert parse_spec("tfds:a_b:c").tfds_name == "a_b/c"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text", ["mnist", "fashion-mnist", "hf:foo", "", "tfds", "npz", "/data/x.npz"]
)
def test_unknown_spec_lists_allowed_forms(text: str) -> None:
    match = "unknown dataset spec.*'fashion_mnist'.*tfds:NAME.*npz:PATH.*folder:PATH"
    with pytest.raises(TfquantError, match=match):
        data.load_numpy(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("npz:", "has no path"),
        ("folder:", "has no path"),
        ("tfds:", "is not a TFDS dataset name"),
        ("tfds:CIFAR10", "is not a TFDS dataset name"),
        ("tfds:cifar10/bad config", "is not a TFDS config name"),
        ("tfds:cifar10:1.0.0:cfg", "cannot read dataset spec"),
        ("tfds:a/b:c", "cannot read dataset spec"),
    ],
)
def test_malformed_specs(text: str, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        parse_spec(text)


def test_non_string_spec() -> None:
    with pytest.raises(TfquantError, match="must be a string"):
        parse_spec(Path("x.npz"))  # type: ignore[arg-type]
