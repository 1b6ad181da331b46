"""The one error handler of every entry point: a :class:`~snn_lab.errors.SnnLabError`
becomes ``error: <one line>`` on stderr and exit code 2; anything else is a bug and
keeps its traceback."""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from ..errors import SnnLabError

EXIT_REJECTED = 2
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}
EXIT_JOBS_FAILED = 1  # a multirun ran, and some of its jobs failed (cli.sweep)


def fail(message: str, code: int = EXIT_REJECTED) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def one_line(message: str) -> str:
    """The user's line of an error message. An error raised in a DataLoader worker comes
    back re-raised by torch as ``Caught DataError in DataLoader worker process 0.`` plus
    the worker's traceback; its cause is the traceback's last line."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        last = lines[-1].strip()
        kind, sep, text = last.partition(": ")
        return text if sep and "Error" in kind else last
    return lines[0] if lines else message


@contextlib.contextmanager
def user_errors(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Report a user-facing error in one line and exit 2. ``cleanup`` runs first (e.g.
    remove a run dir the rejected run created). A multirun job records its error instead
    (``cli.train_app._sweep_job``) and the sweep goes on."""
    try:
        yield
    except SnnLabError as e:
        if cleanup is not None:
            cleanup()
        fail(one_line(str(e)))
    except OSError as e:  # the disk, not the code: full, read-only, no permission, over quota
        if e.errno not in DISK_ERRNOS:
            raise
        fail(
            f"{e.filename or 'an output file'} cannot be written ({e.strerror}); free space or choose a "
            "writable hydra.run.dir / paths.log_dir"
        )
