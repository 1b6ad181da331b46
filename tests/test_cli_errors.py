"""The one CLI error handler: user-facing errors become one line and exit 2."""

from __future__ import annotations

import errno

import pytest

from snn_lab.cli.errors import user_errors
from snn_lab.errors import CheckpointError


def test_a_user_error_is_one_line_and_exit_2_after_cleanup(capsys):
    cleaned = []
    with pytest.raises(SystemExit) as e, user_errors(cleanup=lambda: cleaned.append(True)):
        raise CheckpointError("checkpoint x.ckpt does not exist; pass ckpt_path=...")
    assert e.value.code == 2 and cleaned == [True]
    assert capsys.readouterr().err == "error: checkpoint x.ckpt does not exist; pass ckpt_path=...\n"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_is_one_line_naming_the_file(code, capsys):
    with pytest.raises(SystemExit) as e, user_errors():
        raise OSError(code, "cannot write", "/runs/a/metrics.json")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: /runs/a/metrics.json cannot be written (cannot write)")


def test_anything_else_is_a_bug_and_keeps_its_traceback():
    with pytest.raises(OSError, match="connection reset"), user_errors():
        raise OSError(errno.ECONNRESET, "connection reset")
    with pytest.raises(KeyError), user_errors():
        raise KeyError("a bug")
