r"""Trains the tfquant model zoo on Fashion-MNIST and writes weights + manifest.json.

Full run (writes tfquant/models/weights/<name>.weights.h5 and updates manifest.json):

    .venv/bin/python experiments/train_zoo.py --models cnn,resnet

Smoke run (512 training images, 1 epoch, 512 test images; writes to a temporary
directory unless --out_dir is given):

    .venv/bin/python experiments/train_zoo.py --smoke --models cnn

All training logic lives in :mod:`tfquant.models.train`; this script parses flags, loops over
the models and reports.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from absl import app, flags  # noqa: E402

from tfquant import _quiet  # noqa: E402

_quiet.import_tensorflow()  # first: TensorFlow without its CPU-only CUDA / oneDNN start-up lines

from tfquant.errors import TfquantError  # noqa: E402
from tfquant.models import ZOO, WEIGHTS_DIR  # noqa: E402
from tfquant.models import train as train_lib  # noqa: E402

SMOKE_TRAIN_EXAMPLES = 512
SMOKE_VAL_EXAMPLES = 256
SMOKE_TEST_EXAMPLES = 512

_MODELS = flags.DEFINE_list("models", list(ZOO), f"Zoo models to train, from {', '.join(ZOO)}.")
_EPOCHS = flags.DEFINE_integer(
    "epochs", None, "Epochs for every model (default: per-model, see train.DEFAULT_CONFIGS)."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Batch size (default: per-model, see train.DEFAULT_CONFIGS)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", str(WEIGHTS_DIR), "Where to write <name>.weights.h5 and manifest.json."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Fashion-MNIST IDX directory (default: the Debian package's)."
)
_SMOKE = flags.DEFINE_boolean(
    "smoke",
    False,
    f"Tiny run for tests: {SMOKE_TRAIN_EXAMPLES} train images, 1 epoch; writes to a new "
    "temporary directory unless --out_dir is given.",
)


def _run() -> None:
    names = train_lib.parse_model_names(_MODELS.value)
    out_dir = _OUT_DIR.value
    sizes: dict[str, int | None] = {}
    epochs = _EPOCHS.value
    if _SMOKE.value:
        if not flags.FLAGS["out_dir"].present:
            out_dir = tempfile.mkdtemp(prefix="tfquant_train_zoo_smoke_")
        epochs = 1
        sizes = {
            "train_examples": SMOKE_TRAIN_EXAMPLES,
            "val_examples": SMOKE_VAL_EXAMPLES,
            "test_examples": SMOKE_TEST_EXAMPLES,
        }
    results = []
    for name in names:
        model, info = train_lib.train(
            name,
            epochs=epochs,
            batch_size=_BATCH_SIZE.value,
            seed=_SEED.value,
            data_dir=_DATA_DIR.value,
            **sizes,
        )
        path = train_lib.save_trained(
            model,
            info,
            out_dir=out_dir,
            extra={"command": train_lib.command_line(), "smoke": bool(_SMOKE.value)},
        )
        print(f"[{name}] wrote {path}", flush=True)
        results.append(info)
    print(f"{'model':<14}{'params':>9}{'epochs':>8}{'test_acc':>10}{'train_s':>9}")
    for info in results:
        print(
            f"{info.name:<14}{info.params:>9}{info.epochs:>8}{info.test_accuracy:>10.4f}"
            f"{info.train_seconds:>9.0f}"
        )
    print(f"manifest: {Path(out_dir) / 'manifest.json'}", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        _run()
    except TfquantError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
