"""Typed, versioned result records: one frozen dataclass per record kind, JSON round trip.

A record is what one cell of a study measured (or why it failed). Its JSON form uses the
dataclass field names as keys (so they are the results.jsonl field names), leaves out fields
that are ``None`` unless the kind lists them in ``always_written``, and carries
``schema_version``. Reading rejects unknown keys, so a renamed field fails loudly instead of
silently dropping data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar

from tfquant.errors import TfquantError
from tfquant.io_utils import append_jsonl

SCHEMA_VERSION_KEY = "schema_version"

R = TypeVar("R", bound="Record")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every record kind (subclass as a frozen, keyword-only dataclass).

    Attributes:
      error: Why the cell could not be produced or measured (the one-line message); a failed
        record is kept in the log and its cell is measured again on the next run.
      executed_on: Where the cell ran: ``{"node_id": <Ray node id, or "inline">, "host": <host name>}``
        (set by the runner, :mod:`tfquant.study.cluster`).

    Class attributes:
      schema_version: Version of the kind's fields; bump it (and override :meth:`_upgrade`)
        when fields change. Records written before versions existed read as version 1.
      always_written: Fields a finished record writes to JSON even when ``None`` (e.g.
        ``convert_seconds``: ``null`` means "model reused"); see :meth:`writes_none`.
    """

    schema_version: ClassVar[int] = 1
    always_written: ClassVar[frozenset[str]] = frozenset()

    error: str | None = None
    executed_on: dict[str, str] | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """The cell this record belongs to (equal to the cell spec's ``key``)."""
        raise NotImplementedError(f"{type(self).__name__} must define key")

    @property
    def failed(self) -> bool:
        """Whether the cell failed (``error`` set)."""
        return self.error is not None

    def writes_none(self, name: str) -> bool:
        """Whether field ``name`` is written when ``None``: ``always_written``, finished records."""
        return name in self.always_written and not self.failed

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict: fields by name, ``None`` left out, plus the version."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None or self.writes_none(f.name)
        }
        d[SCHEMA_VERSION_KEY] = self.schema_version
        return d

    @classmethod
    def _upgrade(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        """Maps a record of an older ``version`` to the current fields (identity at version 1)."""
        return d

    @classmethod
    def from_json(cls: type[R], d: Mapping[str, Any]) -> R:
        """Reads a record written by :meth:`to_json` (or before versions existed).

        Raises:
          TfquantError: unknown or missing keys, or a newer ``schema_version`` than this code's.
        """
        d = dict(d)
        version = d.pop(SCHEMA_VERSION_KEY, 1)
        if not isinstance(version, int) or version < 1 or version > cls.schema_version:
            raise TfquantError(
                f"{cls.__name__} record has schema_version {version!r}; this tfquant reads "
                f"versions 1..{cls.schema_version}; update tfquant or re-run the experiment"
            )
        if version < cls.schema_version:
            d = cls._upgrade(d, version)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise TfquantError(
                f"{cls.__name__} record has unknown field(s) {unknown}; known: {', '.join(sorted(fields))}"
            )
        missing = sorted(
            name for name, f in fields.items()
            if name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise TfquantError(f"{cls.__name__} record lacks required field(s) {missing}")
        return cls(**d)


class RecordSet:
    """The records of a run, one per cell key: the last finished one, else the last failure.

    A results.jsonl is an append-only log: a cell that failed and later succeeded has both
    lines; the finished record wins.
    """

    def __init__(self, records: Sequence[Record]) -> None:
        by_key: dict[tuple[Any, ...], Record] = {}
        for r in records:
            old = by_key.get(r.key)
            if old is None or r.failed == old.failed or old.failed:
                by_key[r.key] = r
        self._by_key = by_key

    def __iter__(self) -> Iterator[Record]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: tuple[Any, ...]) -> Record | None:
        """The record of ``key`` (finished or failed), or None."""
        return self._by_key.get(tuple(key))

    def ok(self, key: tuple[Any, ...]) -> Record | None:
        """The finished record of ``key``; None when missing or failed."""
        r = self.get(key)
        return None if r is None or r.failed else r

    def done_keys(self) -> set[tuple[Any, ...]]:
        """Keys of the finished cells (what a resumed run skips)."""
        return {k for k, r in self._by_key.items() if not r.failed}

    def values(
        self,
        field: str = "accuracy",
        *,
        group: Callable[[Record], str] = lambda r: str(r.key[0]),
        cell: Callable[[Record], str] = lambda r: str(r.key[-1]),
    ) -> dict[tuple[str, str], float]:
        """(group, cell) -> ``field`` of every finished record that has it (claims' input)."""
        out = {}
        for r in self._by_key.values():
            v = getattr(r, field, None)
            if not r.failed and v is not None:
                out[(group(r), cell(r))] = float(v)
        return out


class RecordLog:
    """A run's ``results.jsonl``: append-only, one complete JSON line per record.

    The one writer (the run holding the folder's :class:`~tfquant.study.lock.RunLock`)
    :meth:`repair` s the log when it opens it: a torn last line (a power cut in the middle of
    a write) is cut off, so the file holds only complete records. :meth:`append` writes one
    record in one fsync'd write and rolls back a failed write (disk full). :meth:`read` gives
    the :class:`RecordSet`; a line that does not parse (a flipped bit) is skipped and counted
    in :attr:`skipped`, so its cell is measured again instead of the run stopping.
    """

    def __init__(self, path: "str | os.PathLike[str]", parse: Callable[[Mapping[str, Any]], Record]) -> None:
        self.path = Path(path)
        self._parse = parse
        self.skipped = 0

    def repair(self) -> int:
        """Cuts a torn last line off the log; returns the number of bytes removed."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep

    def lines(self) -> list[dict[str, Any]]:
        """The log's complete records as JSON objects (unparseable lines skipped and counted)."""
        self.skipped = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.skipped += 1
                continue
            if not isinstance(d, dict):
                self.skipped += 1
                continue
            out.append(d)
        return out

    def read(self) -> RecordSet:
        """All records of the log, one per cell (see :class:`RecordSet`).

        Raises:
          TfquantError: a complete line is a record of another kind or version (a renamed field).
        """
        return RecordSet([self._parse(d) for d in self.lines()])

    def done_keys(self) -> set[tuple[Any, ...]]:
        """Keys of the cells with a finished record: what a resumed run skips."""
        return self.read().done_keys()

    def append(self, record: Record) -> None:
        """Appends ``record`` as one line, durably (fsync); a failed write leaves nothing.

        Raises:
          OSError: the write failed (disk full, permissions); the log is as before the call.
        """
        append_jsonl(self.path, record.to_json())
