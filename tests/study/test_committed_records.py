"""The committed runs' records read back as typed records and write back byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfquant.experiments.nvidia_calibration import NvidiaCalibrationRecord
from tfquant.experiments.ptq_zoo import PtqZooRecord
from tfquant.experiments.whitepaper_ptq import SPREAD, SpreadRecord, WhitepaperPtqRecord
from tfquant.io_utils import read_jsonl

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


def _kind(d: dict):
    return SpreadRecord if d.get("cell") == SPREAD else WhitepaperPtqRecord


@pytest.mark.parametrize("folder, kind", [
    ("ptq_zoo", lambda d: PtqZooRecord),
    ("ptq_zoo_avx512_vnni", lambda d: PtqZooRecord),
    ("nvidia_calibration", lambda d: NvidiaCalibrationRecord),
    ("main_job_short/whitepaper_ptq", _kind),
    ("full/whitepaper_ptq", _kind),
])
def test_committed_records_round_trip(folder: str, kind) -> None:
    lines = read_jsonl(RESULTS / folder / "results.jsonl")
    assert lines, folder
    for d in lines:
        back = kind(d).from_json(d).to_json()
        assert back.pop("schema_version") == 1
        assert back == d
