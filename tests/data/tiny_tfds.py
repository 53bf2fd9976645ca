"""A tiny TFDS builder prepared offline in the tests, to exercise the real (unmocked) path.

Example ``i`` of a split is an 8x8 RGB image filled with the value ``10 * i + offset`` and
label ``i % 3``, so a test can tell exactly which examples it received. The builder has
``train`` and ``validation`` splits but no ``test`` split, like imagenet2012.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

NAME = "tfquant_tiny_images"
SIZES = {"train": 20, "validation": 6}
OFFSETS = {"train": 0, "validation": 5}


class TfquantTinyImages(tfds.core.GeneratorBasedBuilder):
    """Registered with TFDS as ``tfquant_tiny_images``."""

    VERSION = tfds.core.Version("1.0.0")
    # No source folder with checksums/metadata: TFDS would otherwise locate one through
    # importlib_resources, which is not a dependency of this project.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(SIZES[split]):
            image = np.full((8, 8, 3), 10 * i + OFFSETS[split], dtype=np.uint8)
            yield i, {"image": image, "label": i % 3}


def prepare(data_dir: str) -> None:
    """Writes the dataset's records into ``data_dir`` (no network needed)."""
    TfquantTinyImages(data_dir=data_dir).download_and_prepare()


class TfquantTinyInt32(tfds.core.GeneratorBasedBuilder):
    """Registered as ``tfquant_tiny_int32``: int32 "images", which cannot be scaled to [0, 1]."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.int32),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        raise NotImplementedError("only used through tfds.testing.mock_data")

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        raise NotImplementedError("only used through tfds.testing.mock_data")
