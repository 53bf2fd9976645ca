"""What the toy studies of the runner and cluster tests share: cells and records keyed by
(model, cell). Each test module subclasses :class:`ToyRecord` with the fields it measures."""

from __future__ import annotations

import dataclasses

from tfquant.study import Record
from tfquant.study.runner import ModelCell as ToyCell

__all__ = ["ToyCell", "ToyRecord"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyRecord(Record):
    """A record keyed like :class:`ToyCell` (``(model, cell)``)."""

    model: str
    cell: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)
