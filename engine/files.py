"""Atomic file writes, the one way nst-engine writes a file: readers see the old file or the whole new one.

Every output (images, traces, checkpoints, cache entries, exported models) goes through a temporary file in the
destination's folder, is flushed to disk, gets the permissions a new file would get under the umask, and is then
renamed over the destination. A failure at any point removes the temporary file and leaves the destination as it
was.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

#: Temporary files end in this suffix, so that a glob for real entries (``*.png``, ``*.onnx``) never sees one.
TMP_SUFFIX = ".tmp"


def special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is not a regular file (a FIFO blocks a reader forever, /dev/zero never
    ends): "a FIFO", "a device", "a socket" or "a folder"; None for a regular file or a missing path."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError or ValueError otherwise. The size is read
    before the data, and the read is bounded too (a file may grow while being read)."""
    kind = special_kind(path)
    if kind is not None:
        raise ValueError(f"is {kind}, not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"is {size} bytes, over the limit of {limit}")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is over the limit of {limit} bytes")
    return data


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove the temporaries that earlier writes of ``path`` left when their process was killed (kill -9 at the
    rename cannot be cleaned up by the process itself). A temporary names its writer's pid; a live one is kept."""
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        pid = candidate.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (``onnx.save``, ``torch.save``);
    when the block ends without an error the file is synced and renamed to ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    # The name is fixed before the file exists, so a signal at any point leaves nothing the finally misses.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
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


def file_sha256(path: Path, chunk: int = 1 << 20) -> str | None:
    """The sha256 of a regular file's bytes, read in chunks; None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        if special_kind(path) is not None:
            return None
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
