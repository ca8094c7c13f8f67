"""Images sent by a browser: untrusted bytes, checked exactly as a file given on the command line.

An upload is written under a name this server makes (random hex) in its own temporary folder, and read back
through ``engine.images`` with the server's pixel limit: a file that is not an image, is truncated, empty, or
whose header claims more pixels than the limit (a decompression bomb) is refused before any pixel is decoded.
No name the browser sends is ever part of a path; the original file name is only shown, and only escaped.
"""

from __future__ import annotations

import re
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nst_engine import images
from nst_engine.errors import ImageError
from nst_engine.resize import resize_long

#: The upload ids this server makes, and the only ones it looks up.
UPLOAD_ID = re.compile(r"^[0-9a-f]{16}$")


class UploadRejected(Exception):
    """An upload that fails the checks; the message is for the page."""


@dataclass(frozen=True)
class Upload:
    id: str
    path: Path
    name: str  # the browser's file name, for display only
    width: int
    height: int
    thumbnail: bytes  # a JPEG, 256 px on its long side


class Uploads:
    """The server's temporary folder of uploads, bounded in count (the oldest unused ones are deleted)."""

    def __init__(
        self, folder: Path, max_pixels: int, max_count: int = 64, in_use: Callable[[Path], bool] | None = None
    ):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.max_pixels, self.max_count = max_pixels, max_count
        self.in_use = in_use or (lambda _p: False)
        self._items: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str) -> Upload:
        shown = display_name(name)
        upload_id = secrets.token_hex(8)
        path = self.folder / f"{upload_id}.upload"
        path.write_bytes(data)
        try:
            image = images.read_image(path, self.max_pixels)
        except ImageError as exc:
            path.unlink(missing_ok=True)
            raise UploadRejected(str(exc).replace(f"'{path}'", f"'{shown}'").replace(str(path), shown)) from None
        tensor = images.to_tensor(image)
        upload = Upload(upload_id, path, shown, image.shape[1], image.shape[0],
                        images.encode_jpeg(resize_long(tensor, 256)))  # fmt: skip
        with self._lock:
            self._items[upload_id] = upload
            self._evict()
        return upload

    def get(self, upload_id: str) -> Upload | None:
        if not UPLOAD_ID.match(upload_id):
            return None
        with self._lock:
            return self._items.get(upload_id)

    def _evict(self) -> None:
        for old in list(self._items.values())[: max(0, len(self._items) - self.max_count)]:
            if not self.in_use(old.path):
                del self._items[old.id]
                old.path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def display_name(name: str) -> str:
    """The browser's file name reduced to something safe to show: its last part, printable, at most 80 chars."""
    last = re.split(r"[\\/]", name or "")[-1]
    cleaned = "".join(c for c in last if c.isprintable())[:80]
    return cleaned or "upload"
