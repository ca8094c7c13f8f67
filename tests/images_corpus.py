"""Generates broken, odd and hostile image files for the tests (nothing binary is committed)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def _encode(suffix: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(suffix, image, params or [])
    assert ok
    return data.tobytes()


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random BGR uint8 picture."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def exif_rotated_jpeg(image: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose APP1 EXIF block says 'rotate' (6: 90 degrees clockwise)."""
    jpeg = _encode(".jpg", image)
    ifd = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    ifd += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = zlib.compress(b"\x00" * 16)
    idat = b"IDAT" + body
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(body))
        + idat
        + struct.pack(">I", zlib.crc32(idat))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


def palette_png_with_transparency() -> bytes:
    """An 8x8 indexed-colour PNG with a tRNS chunk (palette + transparency)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 3, 0, 0, 0)
    plte = bytes([255, 0, 0, 0, 0, 255])
    trns = bytes([255, 0])  # index 1 fully transparent
    rows = b"".join(b"\x00" + bytes([(x + y) % 2 for x in range(8)]) for y in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"PLTE", plte)
        + chunk(b"tRNS", trns)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def animated_gif(path: Path) -> None:
    """Two frames: dark then light. Readers should give the first."""
    animation = cv2.Animation()
    animation.frames = [np.full((10, 12, 3), v, np.uint8) for v in (30, 220)]
    animation.durations = [100, 100]
    assert cv2.imwriteanimation(str(path), animation)


def cmyk_jpeg(image: np.ndarray) -> bytes:
    """A 4-component CMYK JPEG (as print workflows write them); Pillow writes it, OpenCV cannot."""
    import io

    from PIL import Image

    rgb = image[:, :, ::-1].astype(np.float32) / 255
    k = 1 - rgb.max(axis=2, keepdims=True)
    cmy = (1 - rgb - k) / np.maximum(1 - k, 1e-6)
    cmyk = (np.concatenate([cmy, k], axis=2) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    assert data[:2] == b"\xff\xd8"
    return data


def corpus(folder: Path) -> dict[str, Path]:
    """Every kind of input the tests throw at the reader, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    good_png = _encode(".png", photo())
    good_jpg = _encode(".jpg", photo())
    files: dict[str, bytes] = {
        "truncated.jpg": good_jpg[: len(good_jpg) // 3],
        "truncated.png": good_png[: len(good_png) // 3],
        "empty.png": b"",
        "one_pixel.png": _encode(".png", np.full((1, 1, 3), 128, np.uint8)),
        "bomb.png": png_header_only(100_000, 100_000),
        "random_bytes.jpg": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "png_named.jpg": good_png,
        "deep16.png": _encode(".png", (photo().astype(np.uint16) * 257)),
        "gray.png": _encode(".png", cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY)),
        "rgba.png": _encode(".png", np.dstack([photo(), np.full((48, 64), 128, np.uint8)])),
        "palette.png": palette_png_with_transparency(),
        "exif_rotated.jpg": exif_rotated_jpeg(photo(40, 60)),
        "long_thin.png": _encode(".png", photo(16, 4000)),
        "cmyk.jpg": cmyk_jpeg(photo()),
        "text.png": b"this is not an image, just text pretending\n" * 4,
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    gif = folder / "animated.gif"
    animated_gif(gif)
    paths["animated.gif"] = gif
    return paths
