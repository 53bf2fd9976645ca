"""JSON round trip of the frozen, typed config dataclasses: one set of checks for all.

Recipes, simulation specs, input contracts, QAT schedules and records all serialise the
same way (style principle 1: a config is data that round-trips to JSON and rejects unknown
keys):

* :func:`to_json_dict`: each field, enums as their value, nested ones by their own
  ``to_dict``, plus an optional version key;
* :func:`from_json_dict`: a mapping checked (is an object, the version is the one this
  tfquant reads, no unknown key, the required keys present) and turned into the
  constructor's keyword arguments; the dataclass's ``__post_init__`` then checks values;
* :func:`loads_object`: ``json.loads`` with the project's error for a broken file.

Every error is a :class:`~tfquant.errors.TfquantError` that names the object (``what``), the
bad key or value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Iterable, Mapping

from tfquant.errors import TfquantError


def to_json_dict(obj: Any, *, version_key: str | None = None, version: Any = None) -> dict[str, Any]:
    """The fields of dataclass ``obj`` as JSON-ready values (enums -> value, nested -> to_dict)."""
    d: dict[str, Any] = {} if version_key is None else {version_key: version}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and hasattr(value, "to_dict"):
            value = value.to_dict()
        d[field.name] = value.value if isinstance(value, enum.Enum) else value
    return d


def from_json_dict(
    cls: type,
    data: object,
    *,
    what: str,
    version_key: str | None = None,
    version: Any = None,
    required: Iterable[str] = (),
    hint: str = "",
) -> dict[str, Any]:
    """Keyword arguments of ``cls`` from a parsed JSON object, checked.

    Args:
      cls: The dataclass.
      data: The parsed object.
      what: How errors name the object (``recipe``, ``SimSpec``, ...).
      version_key: Key holding the format version (removed from the result); a missing
        key means the current version.
      version: The version this tfquant reads.
      required: Keys that must be present.
      hint: What to do about an unsupported version (appended to that error).

    Raises:
      TfquantError: not a mapping, another version, unknown or missing keys.
    """
    if not isinstance(data, Mapping):
        raise TfquantError(
            f"{what} must be an object (a JSON object of {what} fields), got {type(data).__name__}"
        )
    d = dict(data)
    if version_key is not None:
        found = d.pop(version_key, version)
        if found != version:
            raise TfquantError(
                f"{what}: {version_key} {found!r} is not supported (this tfquant reads {version!r})"
                + (f"; {hint}" if hint else "")
            )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise TfquantError(f"unknown {what} key(s) {unknown}; allowed keys: {sorted(known)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise TfquantError(f"{what} has no {', '.join(map(repr, missing))}; add {'it' if len(missing) == 1 else 'them'}")
    return d


def loads_object(text: str, *, what: str) -> Any:
    """``json.loads(text)``; a broken file raises an error that names ``what``.

    Raises:
      TfquantError: ``text`` is not valid JSON.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TfquantError(f"{what} is not valid JSON ({e}); fix the file") from None
    except RecursionError:
        raise TfquantError(f"{what} is nested too deeply to be a {what}; fix the file") from None
