"""The only place that reads or writes image files.

Files become ``(1, 3, H, W)`` float32 RGB tensors in [0, 1] and back. Every way a file can be unusable
ends in one ImageError that names the file and the fix.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from nst_engine.errors import ConfigError, ImageError
from nst_engine.files import read_limited, special_kind, write_atomic
from nst_engine.jobs import OUTPUT_SUFFIXES
from nst_engine.resize import fit_long_side, resize_long

# OpenCV prints decoder warnings ("PNG input buffer is incomplete") on stderr; our errors say it better.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

#: Refuse inputs above this many pixels, read from the file header before any decoding.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: No usable image file is larger (8192 x 8192 pixels of 16-bit RGBA, uncompressed, is 512 MiB).
MAX_FILE_BYTES = 1 << 30
_ALPHA_FORMATS = (b"\x89PNG", b"RIFF", b"GIF8", b"II*\x00", b"MM\x00*")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header, read by Pillow without decoding any pixel; None if Pillow does not
    know the format (OpenCV may still) or cannot parse the header (the decoder then says what is wrong)."""
    try:
        return _pillow_size(data)
    except Image.DecompressionBombError:
        # Pillow refuses to say how large a huge image is; ours is the limit that counts, so ask again without its.
        with _PILLOW_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return _pillow_size(data)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - any parse failure: no size from the header
        return None


_PILLOW_LIMIT = threading.Lock()


def _pillow_size(data: bytes) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    return int(width), int(height)


def _truncated(data: bytes) -> bool:
    """A JPEG or PNG cut short: decoders fill the missing part with grey and succeed, so it is caught here, from
    the end marker every whole file has (JPEG: EOI after the last scan; PNG: the IEND chunk)."""
    if data[:2] == b"\xff\xd8":
        last_scan = data.rfind(b"\xff\xda")
        return last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


#: The fewest bits a Huffman-coded JPEG spends on one 8x8 block of its first component (progressive scans
#: included: the DC scan needs at least a bit a block); and deflate's best ratio (PNG), 1032:1.
_JPEG_BITS_PER_BLOCK = 1
_DEFLATE_RATIO = 1032


def _too_little_data(data: bytes, width: int, height: int) -> bool:
    """A file that declares far more pixels than its bytes could encode: a JPEG or PNG cut short and patched with
    an end marker, which decoders fill with grey and accept (a decompression bomb's cheap cousin)."""
    if data[:2] == b"\xff\xd8" and _jpeg_huffman(data):
        blocks = -(-width // 8) * -(-height // 8)
        return len(data) * 8 < blocks * _JPEG_BITS_PER_BLOCK
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return len(data) * _DEFLATE_RATIO < height * (1 + -(-width // 8))
    return False


def _jpeg_huffman(data: bytes) -> bool:
    """Whether a JPEG's frame is Huffman-coded (SOF0-SOF3); arithmetic-coded frames can be far denser."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3):
            return True
        if marker in (0xC9, 0xCA, 0xCB, 0xDA):
            return False
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return False


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
        if path.is_symlink():
            raise ImageError(f"'{path}' is a symlink that leads to no file (broken, or a loop); give the image itself")
        raise ImageError(f"image '{path}' not found; check the path")
    kind = special_kind(path)
    if kind is not None:
        raise ImageError(f"'{path}' is {kind}, not an image file; give a file")
    try:
        data = read_limited(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise ImageError(f"cannot read '{path}' ({exc.strerror}); check its permissions") from exc
    except ValueError as exc:
        raise ImageError(f"'{path}' {exc}; no image nst-engine can use is that large") from exc
    if not data:
        raise ImageError(f"'{path}' is empty (0 bytes); re-export or re-download it")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(
            f"'{path}' is {size[0]}x{size[1]} pixels, over the limit of {max_pixels} pixels; "
            "downscale it first or raise --max-input-pixels"
        )
    if _truncated(data):
        raise ImageError(f"'{path}' is truncated (its end-of-image marker is missing); re-export or re-download it")
    if size is not None and _too_little_data(data, *size):
        raise ImageError(
            f"'{path}' declares {size[0]}x{size[1]} pixels but holds only {len(data)} bytes: it is truncated or "
            "damaged; re-export or re-download it"
        )
    image = _decode(data, path)
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(
            f"'{path}' is {image.shape[1]}x{image.shape[0]} pixels, over the limit of {max_pixels} pixels; "
            "downscale it first or raise --max-input-pixels"
        )
    return _to_rgb_float(image, path)


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes (as ``encode_png`` makes them) as (H, W, 3) float32 RGB: what ``read_image`` gives for the file."""
    return _to_rgb_float(_decode(data, Path("<png>")), Path("<png>"))


def _decode(data: bytes, path: Path) -> np.ndarray:
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
    return np.asarray(image)


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
    image = to_tensor(read_image(path, max_pixels))
    if long_side is None:
        return image
    height, width = fit_long_side(int(image.shape[-2]), int(image.shape[-1]), long_side)
    if height * width > max_pixels:
        raise ImageError(
            f"'{path}' at a long side of {long_side} px would be {width}x{height} pixels, over the limit of "
            f"{max_pixels}; use a smaller --size (or --style-scale), or raise --max-input-pixels"
        )
    return resize_long(image, long_side)


def output_suffix(path: str | Path) -> str:
    """The encoder suffix for an output path, or ConfigError for an extension we cannot write."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"cannot write '{path}': the output must end in .png, .jpg, .jpeg, .tif or .tiff")
    return OUTPUT_SUFFIXES[suffix]


def check_bits(path: str | Path, bits: int) -> str:
    """The encoder suffix for ``path`` written with ``bits`` a channel, or ConfigError naming the fix."""
    suffix = output_suffix(path)
    if bits not in (8, 16):
        raise ConfigError(f"--bit-depth must be 8 or 16, not {bits}")
    if bits == 16 and suffix == ".jpg":
        raise ConfigError(f"'{path}': JPEG has 8 bits a channel; write .png or .tif for --bit-depth 16")
    return suffix


def save(
    tensor: torch.Tensor, path: str | Path, jpeg_quality: int = 95, bits: int = 8, note: str | None = None
) -> None:
    """Write a (1, 3, H, W) or (3, H, W) tensor in [0, 1] as PNG, JPEG or TIFF (by extension), atomically.

    TIFF is always 16 bits a channel, PNG with ``bits=16``: for print, the optimiser's float precision is kept
    to 1/65535 instead of 1/255. JPEG is 8-bit only. ``note`` (what made the image) is kept in the file: a PNG
    text chunk or a JPEG comment; TIFF keeps none."""
    suffix = check_bits(path, bits)
    data = _encode(tensor, suffix, bits, jpeg_quality, str(path))
    write_atomic(path, data if note is None else with_note(data, note))


#: The key of the note a written image carries (a PNG tEXt keyword; a JPEG comment starts with it and a colon).
NOTE_KEY = b"nst-engine"
#: Where a note is looked for: it is written at the start of the file.
NOTE_WINDOW = 128 << 10


def with_note(data: bytes, note: str) -> bytes:
    """``data`` (a PNG or JPEG file) with ``note`` stored in it, right after the header, so that ``read_note``
    finds it without reading the image."""
    text = note.encode("utf-8")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"iTXt" + NOTE_KEY + b"\0\0\0\0\0" + text  # iTXt: UTF-8, uncompressed, no language
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return data[:33] + chunk + data[33:]  # after the signature and IHDR (8 + 25 bytes)
    if data[:2] == b"\xff\xd8" and len(text) < 60000:
        body = NOTE_KEY + b":" + text
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]
    return data


def read_note(path: Path) -> str | None:
    """The note ``save`` stored in an image file, or None (none, another tool's file, or unreadable)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(NOTE_WINDOW)
    except OSError:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        at = 8
        while at + 8 <= len(data):
            length, kind = struct.unpack(">I", data[at : at + 4])[0], data[at + 4 : at + 8]
            body = data[at + 8 : at + 8 + length]
            if kind == b"iTXt" and body.startswith(NOTE_KEY + b"\0"):
                return body[len(NOTE_KEY) + 5 :].decode("utf-8", "replace")
            if kind == b"IDAT":
                return None
            at += 12 + length
    elif data[:2] == b"\xff\xd8":
        at = 2
        while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] != 0xDA:
            length = struct.unpack(">H", data[at + 2 : at + 4])[0]
            body = data[at + 4 : at + 2 + length]
            if data[at + 1] == 0xFE and body.startswith(NOTE_KEY + b":"):
                return body[len(NOTE_KEY) + 1 :].decode("utf-8", "replace")
            at += 2 + length
    return None


def encode_png(tensor: torch.Tensor) -> bytes:
    """An 8-bit PNG file's bytes, the same bytes ``save`` writes to a .png path."""
    return _encode(tensor, ".png", 8, 95, "<png>")


def encode_jpeg(tensor: torch.Tensor, quality: int = 85) -> bytes:
    """An 8-bit JPEG file's bytes (the web page's previews: a tenth of a PNG's size)."""
    return _encode(tensor, ".jpg", 8, quality, "<jpeg>")


def _encode(tensor: torch.Tensor, suffix: str, bits: int, jpeg_quality: int, name: str) -> bytes:
    deep = suffix == ".tiff" or bits == 16
    rgb = to_array(tensor)
    scale, kind = (65535.0, np.uint16) if deep else (255.0, np.uint8)
    bgr = np.ascontiguousarray((rgb[:, :, ::-1] * scale + 0.5).astype(kind))
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix == ".jpg" else []
    ok, encoded = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise ImageError(f"could not encode the image as {suffix} for '{name}'")
    return bytes(encoded.tobytes())
