"""Typed, versioned result records: one frozen dataclass per record kind, JSON round trip.

A record is what one cell of a study measured (or why it failed). Its JSON form uses the
dataclass field names as keys (so they are the results.jsonl field names), leaves out fields
that are ``None`` unless the kind lists them in ``always_written``, and carries
``schema_version``. Reading rejects unknown keys, so a renamed field fails loudly instead of
silently dropping data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar

from tfquant.errors import TfquantError

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
