"""The one training loop: seeded data order, repeatable weights, steps, history, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant import training
from tfquant.errors import TfquantError


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)


def _model() -> keras.Model:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    hidden = keras.layers.Dropout(0.3)(hidden)  # so the seed also drives dropout
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden))


def _train(seed: int, *, epochs: int = 2, **kwargs: object) -> tuple[keras.Model, training.FitResult]:
    training.seed_everything(seed)
    model = _model()
    x, y = _data()
    result = training.fit(
        model, x, y, epochs=epochs, batch_size=8, seed=seed, reseed=False,
        optimizer=training.cosine_adam(0.01, epochs * 5),
        loss=training.sparse_cross_entropy(from_logits=True),
        progress=training.EpochLog("t", epochs, log=None), **kwargs,
    )
    return model, result


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    first, second, other = (_train(s)[0].get_weights() for s in (5, 5, 6))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_steps_history_and_validation() -> None:
    x, y = _data()
    model, result = _train(0, epochs=3, validation_data=(x[:10], y[:10]))
    assert result.steps == 3 * 5 and int(model.optimizer.iterations) == 15
    assert len(result.history) == 3 and len(result.series("val_accuracy")) == 3
    assert all(h["seconds"] >= 0 and np.isfinite(h["loss"]) for h in result.history)
    assert result.series("loss") == tuple(h["loss"] for h in result.history)


def test_steps_per_epoch_runs_over_the_repeated_data() -> None:
    """7 steps of 8 from 40 examples: more than one pass, no short last batch."""
    model, result = _train(0, epochs=2, steps_per_epoch=7)
    assert result.steps == 14 and int(model.optimizer.iterations) == 14


def test_batches_are_a_seeded_permutation_each_pass() -> None:
    x = np.arange(12, dtype=np.float32).reshape(12, 1)
    y = np.arange(12)

    def passes(seed: int) -> list[list[int]]:
        training.seed_everything(seed)
        data = training.batches(x, y, batch_size=4, seed=seed)
        return [[int(v) for b in data for v in b[1].numpy()] for _ in range(2)]

    first, again = passes(1), passes(1)
    assert first == again
    assert all(sorted(p) == list(range(12)) for p in first)
    assert first[0] != first[1]  # reshuffled every pass
    assert passes(2) != first
    repeated = training.batches(x, y, batch_size=5, seed=1, repeat=True)
    taken = [int(v) for b in repeated.take(5) for v in b[1].numpy()]
    assert sorted(taken[:12]) == list(range(12)) and len(taken) == 25  # batches span passes


def test_checkpoints_per_epoch_restore_the_weights(tmp_path: Path) -> None:
    for pattern in ("ckpt/epoch_{epoch:03d}", "h5/epoch{epoch:03d}.h5"):
        model, result = _train(0, checkpoints=tmp_path / pattern)
        assert [Path(p).name for p in result.checkpoints] == [
            pattern.split("/")[1].format(epoch=e) for e in (1, 2)
        ]
        final = model.get_weights()
        model.load_weights(result.checkpoints[0])
        assert any(not np.array_equal(a, b) for a, b in zip(final, model.get_weights()))
        model.load_weights(result.checkpoints[1])
        for a, b in zip(final, model.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_deterministic_ops_are_restored() -> None:
    from tfquant.tflite.tf_internals import is_op_determinism_enabled

    before = is_op_determinism_enabled()
    with training.deterministic_ops():
        assert is_op_determinism_enabled()
    assert is_op_determinism_enabled() == before


@pytest.mark.parametrize("seed", [None, 1.5, True, "0"])
def test_seed_must_be_an_integer(seed: object) -> None:
    with pytest.raises(TfquantError, match="seed must be an integer"):
        training.seed_everything(seed)  # type: ignore[arg-type]


def test_cosine_adam_decays_to_zero() -> None:
    config = training.cosine_adam(0.1, 10).get_config()["learning_rate"]
    schedule = keras.optimizers.schedules.deserialize(config)
    assert float(schedule(0)) == pytest.approx(0.1) and float(schedule(10)) == pytest.approx(0.0)
    assert float(schedule(5)) == pytest.approx(0.05)
    assert isinstance(training.sparse_cross_entropy(), keras.losses.SparseCategoricalCrossentropy)
    assert tf.is_tensor(training.sparse_cross_entropy(from_logits=False)(np.array([1]), np.array([[0.2, 0.8]])))
