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


def test_an_error_raised_in_a_dataloader_worker_is_its_cause_in_one_line(capsys):
    """torch re-raises a worker's exception as 'Caught X in DataLoader worker ...' plus the
    worker's traceback; the user sees the cause, the traceback's last line."""
    from torch.utils.data import DataLoader, Dataset

    from snn_lab.errors import DataError

    class Corrupt(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise DataError("sample 0 of /data/x.bin is truncated; delete it and download again")

    loader = DataLoader(Corrupt(), num_workers=1)
    with pytest.raises(SystemExit) as e, user_errors():
        next(iter(loader))
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == "error: sample 0 of /data/x.bin is truncated; delete it and download again\n"
