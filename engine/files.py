"""Atomic file writes, the one way nst-engine writes a file: readers see the old file or the whole new one.

Every output (images, traces, checkpoints, cache entries, exported models) goes through a temporary file in the
destination's folder, is flushed to disk, gets the permissions a new file would get under the umask, and is then
renamed over the destination. A failure at any point removes the temporary file and leaves the destination as it
was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Temporary files end in this suffix, so that a glob for real entries (``*.png``, ``*.onnx``) never sees one.
TMP_SUFFIX = ".tmp"


def new_file_mode() -> int:
    """The mode a newly created file gets under the current umask (mkstemp's files are 0600 whatever the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot open a folder, which only costs durability."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (``onnx.save``, ``torch.save``);
    when the block ends without an error the file is synced and renamed to ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
