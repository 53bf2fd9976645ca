"""User-facing errors.

Every mistake a user can make (a bad path, an unknown mode, a shape mismatch, NaN in
calibration data) raises :class:`TfquantError` with one sentence that names the problem and
the fix. The CLI prints ``error: <message>`` on one line and exits with status 2.
``assert`` is kept for internal invariants only.

:func:`error_line` is what the CLI and the experiment scripts print for any exception that
reaches them: the message of a :class:`TfquantError`; for an ``OSError`` (a full disk, a
read-only folder) the failed path and the reason; for anything else (a file so broken that a
library raised something unforeseen) the exception on one line, never a traceback
(``TFQUANT_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import errno
import os

TRACEBACK_ENV = "TFQUANT_TRACEBACK"


class TfquantError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def os_error_message(e: OSError) -> str:
    """One line for an ``OSError``: what failed, where, and the fix."""
    where = f" {str(e.filename)!r}" if e.filename else ""
    reason = e.strerror or _one_line(str(e)) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or write to another folder; nothing half-written was kept"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or write to another one; nothing half-written was kept"
    else:
        fix = "check the path and the disk"
    return f"cannot read or write{where} ({reason}); {fix}"


def error_line(e: BaseException) -> str:
    """The ``error: ...`` line (without the prefix) printed for ``e``."""
    if isinstance(e, TfquantError):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    if isinstance(e, MemoryError):
        return "out of memory; use a smaller --limit or batch size, or a machine with more memory"
    return (f"unexpected {type(e).__name__}: {_one_line(str(e)) or 'no message'} (a malformed input "
            f"file, or a bug in tfquant: set {TRACEBACK_ENV}=1 to see where)")


def show_traceback() -> bool:
    """Whether to print tracebacks (``TFQUANT_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
