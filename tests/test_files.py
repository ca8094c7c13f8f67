"""Atomic writes (engine.files) and size checks from image headers (engine.images.header_size)."""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_engine import files, images
from nst_engine.errors import ImageError
from tests.images_corpus import photo

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_replaces_whole_and_gets_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    old = os.umask(0o027)
    try:
        files.write_atomic(target, b"first")
        files.write_atomic(target, b"second")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_a_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("validation failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(tmp_path / "out.png", b"x")
    assert not list(tmp_path.iterdir())


def test_the_data_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    files.write_atomic(tmp_path / "a.json", b"{}")
    assert order[:2] == ["fsync", "replace"]


def test_no_other_module_writes_files_its_own_way() -> None:
    """images, cache, export, checkpoints and traces all go through engine.files."""
    offenders = []
    for path in [*ROOT.glob("engine/**/*.py"), *ROOT.glob("export/*.py"), *ROOT.glob("bench/*.py")]:
        text = path.read_text()
        if path.name != "files.py" and any(s in text for s in ("os.replace(", "mkstemp(", "os.rename(")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _pillow_bytes(fmt: str, width: int = 37, height: int = 23, **options: object) -> bytes:
    rgb = photo(height, width)[:, :, ::-1]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, fmt, **options)
    return buffer.getvalue()


FORMATS = {
    "png": ("PNG", {}),
    "gif": ("GIF", {}),
    "bmp": ("BMP", {}),
    "webp-lossy": ("WEBP", {"lossless": False}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "jpeg": ("JPEG", {}),
    "jpeg-progressive": ("JPEG", {"progressive": True}),
    "tiff": ("TIFF", {}),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_header_size_of_real_files_of_each_format(kind: str, tmp_path: Path) -> None:
    fmt, options = FORMATS[kind]
    data = _pillow_bytes(fmt, **options)
    assert images.header_size(data) == (37, 23)
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(data)
    assert images.read_image(path).shape == (23, 37, 3)  # and OpenCV decodes what the header described


def _with_size(kind: str, width: int, height: int) -> bytes:
    """A real small file of ``kind`` whose header is rewritten to claim width x height (a bomb's trick)."""
    if kind == "gif":
        data = bytearray(_pillow_bytes("GIF"))
        data[6:10] = struct.pack("<HH", width, height)  # the logical screen
        block = data.index(b",")  # the image descriptor
        data[block + 5 : block + 9] = struct.pack("<HH", width, height)
        return bytes(data)
    if kind == "bmp":
        data = bytearray(_pillow_bytes("BMP"))
        data[18:26] = struct.pack("<ii", width, height)
        return bytes(data)
    if kind == "jpeg":
        data = bytearray(_pillow_bytes("JPEG"))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
        return bytes(data)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gif", "bmp", "jpeg"])
def test_a_bomb_of_each_format_is_refused_before_decoding(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(_with_size(kind, 60000, 50000))

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded a file its header already ruled out")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    with pytest.raises(ImageError, match=r"60000x50000 pixels, over the limit of 67108864") as info:
        images.read_image(path)
    assert "\n" not in str(info.value)


def test_headers_pillow_cannot_parse_leave_the_verdict_to_the_decoder() -> None:
    assert images.header_size(b"not an image at all") is None
    assert images.header_size(b"") is None
