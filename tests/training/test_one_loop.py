"""There is one training loop: Keras ``fit``, seeding, TensorBoard writers and checkpoints
appear in tfquant/training/ and nowhere else in the library."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tfquant"
# What only the training loop may call (docstrings may still name them in ``literals``).
ONLY_IN_TRAINING = {
    "Keras fit": re.compile(r"(?<!training)\.fit\("),
    "set_random_seed": re.compile(r"set_random_seed\("),
    "summary file writer": re.compile(r"create_file_writer\("),
    "ModelCheckpoint": re.compile(r"ModelCheckpoint\("),
    "op determinism": re.compile(r"enable_op_determinism\("),
}
LITERAL = re.compile(r"``[^`]*``")  # an inline literal in a docstring


def test_training_calls_live_only_in_the_training_package() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "training":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = LITERAL.sub("", line)
            for what, pattern in ONLY_IN_TRAINING.items():
                if pattern.search(code):
                    found.append(f"{relative}:{number}: {what}: {line.strip()}")
    assert not found, "train through tfquant.training instead:\n" + "\n".join(found)


def test_the_patterns_find_what_they_look_for() -> None:
    """The check above is not vacuous: each pattern matches a typical call."""
    samples = {
        "Keras fit": "    model.fit(data, epochs=2)",
        "set_random_seed": "keras.utils.set_random_seed(0)",
        "summary file writer": "w = tf.summary.create_file_writer(d)",
        "ModelCheckpoint": "keras.callbacks.ModelCheckpoint(p)",
        "op determinism": "tf.config.experimental.enable_op_determinism()",
    }
    for what, sample in samples.items():
        assert ONLY_IN_TRAINING[what].search(sample), what
    assert not ONLY_IN_TRAINING["Keras fit"].search("result = training.fit(model, x, y)")
    assert LITERAL.sub("", "see ``model.fit(...)`` here") == "see  here"
