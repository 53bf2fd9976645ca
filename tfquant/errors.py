"""User-facing errors.

Every mistake a user can make (a bad path, an unknown mode, a shape mismatch, NaN in
calibration data) raises :class:`TfquantError` with one sentence that names the problem and
the fix. The CLI prints ``error: <message>`` on one line and exits with status 2.
``assert`` is kept for internal invariants only.
"""

from __future__ import annotations


class TfquantError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""
