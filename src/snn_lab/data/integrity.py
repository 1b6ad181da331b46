"""Checksums of downloaded files, checked with torchvision's own helper."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError

_md5_ok: set[tuple[str, int, int]] = set()


def check_md5(path: Path, md5: str, what: str, fix: str) -> None:
    """``path`` must have the MD5 torchvision publishes for it (torchvision's
    ``check_integrity``); checked once per file version (size, mtime) per process."""
    from torchvision.datasets.utils import check_integrity

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _md5_ok:
        return
    if not check_integrity(str(path), md5):
        raise DataError(f"{what} file {path} is corrupt or partial (its MD5 is not torchvision's {md5}); {fix}")
    _md5_ok.add(key)
