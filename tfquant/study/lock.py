"""One run folder, one writer: an exclusive lock held for the whole run.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<run folder>/.run.lock`` and
keeps the file open until the run ends. The kernel drops a flock when the last descriptor
of the open file goes away, so a run that is killed (even by SIGKILL, or by a power-cut
reboot) never leaves a lock behind: the next run simply takes it. The lock file itself stays
(removing it would race with a run that opened it a moment earlier); its text says who held it
last (pid, host, start time, command line), which is what a refused run prints.

On a filesystem without flock (some network mounts answer ENOLCK / EOPNOTSUPP) the recorded
pid decides instead: a holder on this host whose pid is alive keeps the folder, a dead one's
lock is taken over.

The descriptor is opened close-on-exec (Python's default), so worker processes started with
``spawn`` / ``subprocess`` never inherit the lock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from tfquant.errors import TfquantError

LOCK_NAME = ".run.lock"


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else [],
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", "replace")
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another run"
    return (f"another run (pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started_utc')})")


class RunLock:
    """Exclusive ownership of a run folder for as long as the ``with`` block runs.

    Raises (on enter):
      TfquantError: a live run holds the folder (one line naming it, and what to do), or the
        folder cannot be created or written.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None
        """The previous holder's record when its lock was stale (a killed run), else None."""

    def acquire(self) -> "RunLock":
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise TfquantError(
                f"cannot create the run folder's lock {str(self.path)!r} ({e.strerror}); make "
                "the results folder writable or pass another --results_dir"
            ) from None
        try:
            previous = _read_holder(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TfquantError(
                    f"run folder {str(folder)!r} is in use by {_describe(previous)}; wait for it "
                    "to finish, or pass another --run_name"
                ) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # No flock here: the recorded pid decides.
                if previous.get("host") == socket.gethostname() and _pid_alive(previous.get("pid")) \
                        and previous.get("pid") != os.getpid():
                    raise TfquantError(
                        f"run folder {str(folder)!r} is in use by {_describe(previous)}; wait for "
                        "it to finish, or pass another --run_name"
                    ) from None
            if previous and previous.get("released") is not True:
                self.took_over = previous  # its holder died without releasing: a stale lock
            data = json.dumps(_holder(), sort_keys=True).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError):
                raise TfquantError(
                    f"cannot write the run folder's lock {str(self.path)!r} ({e.strerror}); make "
                    "the results folder writable or free some space"
                ) from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Marks the lock released (so the next run knows this one ended) and drops it."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            holder = _read_holder(fd)
            holder["released"] = True
            data = json.dumps(holder, sort_keys=True).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the lock itself is dropped below either way
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
