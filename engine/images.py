"""The only place that reads or writes image files.

Files become ``(1, 3, H, W)`` float32 RGB tensors in [0, 1] and back. Every way a file can be unusable
ends in one ImageError that names the file and the fix.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import ConfigError, ImageError

# OpenCV prints decoder warnings ("PNG input buffer is incomplete") on stderr; our errors say it better.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

#: Refuse inputs above this many pixels, read from the file header before any decoding.
DEFAULT_MAX_PIXELS = 8192 * 8192
OUTPUT_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}
_ALPHA_FORMATS = (b"\x89PNG", b"RIFF", b"GIF8", b"II*\x00", b"MM\x00*")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, GIF, BMP, WebP or JPEG header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        # Start-of-frame markers carry the size; C4 (DHT), C8 and CC are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _to_rgb_float(image: np.ndarray, path: Path) -> np.ndarray:
    """Any decoded array (gray, BGR, BGRA; 8/16-bit or float) -> (H, W, 3) float32 RGB in [0, 1]."""
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        scaled = image.astype(np.float32) / 65535.0
    elif image.dtype in (np.float32, np.float64):
        scaled = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise ImageError(f"'{path}' has unsupported pixel type {image.dtype}; convert it to an 8-bit PNG or JPEG")
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    channels = scaled.shape[2]
    if channels == 1:
        return np.repeat(scaled, 3, axis=2)
    if channels == 2:  # gray + alpha
        gray, alpha = scaled[:, :, :1], scaled[:, :, 1:]
        return np.repeat(gray * alpha + (1.0 - alpha), 3, axis=2)
    if channels == 4:
        # Transparent pixels have no colour of their own: composite over white, as a viewer would show them.
        bgr, alpha = scaled[:, :, :3], scaled[:, :, 3:]
        scaled = bgr * alpha + (1.0 - alpha)
    return np.ascontiguousarray(scaled[:, :, 2::-1])


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) float32 RGB in [0, 1], honouring EXIF orientation.

    Grayscale, alpha, palette and 16-bit images are converted. Animated images give their first frame.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image '{path}' not found; check the path")
    if path.is_dir():
        raise ImageError(f"'{path}' is a folder, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read '{path}' ({exc.strerror}); check its permissions") from exc
    if not data:
        raise ImageError(f"'{path}' is empty (0 bytes); re-export or re-download it")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(
            f"'{path}' is {size[0]}x{size[1]} pixels, over the limit of {max_pixels} pixels; "
            "downscale it first or raise --max-input-pixels"
        )
    buffer = np.frombuffer(data, np.uint8)
    # IMREAD_UNCHANGED keeps alpha but ignores EXIF orientation; formats with alpha rarely carry EXIF.
    flags = cv2.IMREAD_UNCHANGED if data[:4] in _ALPHA_FORMATS else cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ImageError(f"'{path}' could not be decoded ({str(exc).strip()[:80]}); is it a valid image?") from exc
    if image is None or image.size == 0:
        raise ImageError(
            f"'{path}' is not a readable image (corrupt, truncated or not an image); re-export it as PNG or JPEG"
        )
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(
            f"'{path}' is {image.shape[1]}x{image.shape[0]} pixels, over the limit of {max_pixels} pixels; "
            "downscale it first or raise --max-input-pixels"
        )
    return _to_rgb_float(image, path)


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is ``long_side``, aspect ratio kept, each side at least 1."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (H, W, C) float32 with area averaging when shrinking, bicubic when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.clip(out, 0.0, 1.0)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float32 -> (1, 3, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor -> (H, W, 3) float32 clipped to [0, 1]."""
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    return np.clip(t.permute(1, 2, 0).numpy(), 0.0, 1.0)


def load(path: str | Path, long_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read ``path`` as a (1, 3, H, W) float32 tensor in [0, 1], the long side resized to ``long_side``."""
    image = read_image(path, max_pixels)
    if long_side is not None:
        image = resize(image, *fit_long_side(image.shape[0], image.shape[1], long_side))
    return to_tensor(image)


def output_suffix(path: str | Path) -> str:
    """The encoder suffix for an output path, or ConfigError for an extension we cannot write."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"cannot write '{path}': the output must end in .png, .jpg or .jpeg")
    return OUTPUT_SUFFIXES[suffix]


def new_file_mode() -> int:
    """The mode a newly created file gets under the current umask (mkstemp's files are 0600 whatever the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a written image gets the permissions any new file would (umask applied).
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(tensor: torch.Tensor, path: str | Path, jpeg_quality: int = 95) -> None:
    """Write a (1, 3, H, W) or (3, H, W) tensor in [0, 1] as PNG or JPEG (by extension), atomically."""
    suffix = output_suffix(path)
    rgb = to_array(tensor)
    bgr = np.ascontiguousarray((rgb[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8))
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix == ".jpg" else []
    ok, encoded = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise ImageError(f"could not encode the image as {suffix} for '{path}'")
    write_atomic(path, encoded.tobytes())
