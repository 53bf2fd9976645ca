"""tfquant.progress: bars on a terminal, one line per stage in a log, never on stdout."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tfquant import _quiet, progress


@pytest.fixture(autouse=True)
def _default_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(progress.ENV_VAR, raising=False)
    previous = progress.set_enabled(None)
    yield
    progress.set_enabled(previous)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (what tqdm draws bars on)."""

    def isatty(self) -> bool:
        return True


def _work() -> list[int]:
    """A loop of 3 batches, then a stage that contains a loop and a stage."""
    seen = list(progress.progress(range(3), desc="load", unit="batch"))
    with progress.stage("calibrate"):
        seen += list(progress.progress(iter([7, 8]), total=2, desc="inner loop"))
        with progress.stage("inner stage"):
            pass
    return seen


def test_log_mode_prints_one_line_per_stage_on_stderr_and_nothing_on_stdout(capsys) -> None:
    with progress.reporting():
        assert _work() == [0, 1, 2, 7, 8]
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, lines  # nested loops and stages add no lines
    assert lines[0].startswith("load: 3 batches in ") and lines[0].endswith(" s")
    assert lines[1].startswith("calibrate ... done in ")


def test_a_loop_of_cells_gives_one_line_not_one_per_inner_batch(capsys) -> None:
    with progress.reporting():
        for cell in progress.progress(["a", "b"], desc="sweep", unit="cell"):
            for _ in progress.progress(range(50), desc=f"evaluate {cell}"):
                pass
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [err.splitlines()[0]]
    assert err.startswith("sweep: 2 cells in ")


def test_a_failed_stage_or_loop_prints_nothing(capsys) -> None:
    with progress.reporting():
        with pytest.raises(ValueError):
            with progress.stage("doomed"):
                raise ValueError("x")
        with pytest.raises(ValueError):
            for i in progress.progress(range(5), desc="doomed loop"):
                if i == 2:
                    raise ValueError("y")
    assert capsys.readouterr() == ("", "")


def test_disabled_prints_nothing_and_returns_the_iterable(capsys, monkeypatch) -> None:
    data = [1, 2, 3]
    progress.set_enabled(False)
    assert progress.progress(data, desc="x") is data
    assert not progress.is_enabled()
    _work()
    progress.set_enabled(True)
    monkeypatch.setenv(progress.ENV_VAR, "0")  # the environment variable wins
    with progress.reporting():
        assert progress.progress(data, desc="x") is data
        _work()
    assert capsys.readouterr() == ("", "")


def test_library_default_is_silent_off_a_terminal_and_env_turns_it_on(capsys, monkeypatch) -> None:
    _work()
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv(progress.ENV_VAR, "1")
    _work()
    assert capsys.readouterr().err.count("\n") == 2


def test_terminal_mode_draws_a_bar_on_stderr(monkeypatch, capsys) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    for _ in progress.progress(range(4), desc="evaluate", unit="batch"):  # default: on, a tty
        pass
    with progress.stage("quantize"):
        pass
    text = terminal.getvalue()
    assert "evaluate: 100%" in text and "4/4" in text and "batch/s" in text
    assert "quantize ... done in" in text
    assert capsys.readouterr().out == ""


def test_write_goes_to_stdout_and_keeps_bars_intact(monkeypatch, capsys) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    for i in progress.progress(range(2), desc="sweep", unit="cell"):
        progress.write(f"cell {i} done")
    assert capsys.readouterr().out == "cell 0 done\ncell 1 done\n"
    assert "cell" not in terminal.getvalue().replace("cell/s", "").replace("sweep", "")


def test_evaluator_and_statistics_pass_report_their_batches(capsys) -> None:
    from tfquant.calibration import collect_statistics
    from tfquant.evaluation import predict

    relu = _quiet._one_op_model()  # y = relu(x) on shape (1,): batch axis only
    x = np.linspace(-1.0, 1.0, 10, dtype=np.float32)
    with progress.reporting():
        y = predict(relu, x, batch_size=4)
        stats = collect_statistics(relu, x, {1: "y"}, batch_size=4)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0))
    assert stats.num_examples == 10
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("predict <") and "(10 examples): 3 batches in" in lines[0]
    assert lines[1].startswith("statistics pass (10 examples): 3 batches in")
