"""Image reading and writing: every odd input converts or fails with one clear ImageError."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nst_engine import images
from nst_engine.errors import ConfigError, ImageError
from tests.conftest import gradient_image
from tests.images_corpus import corpus, photo

CONVERTED = [
    "one_pixel.png",
    "png_named.jpg",
    "deep16.png",
    "gray.png",
    "rgba.png",
    "palette.png",
    "exif_rotated.jpg",
    "long_thin.png",
    "cmyk.jpg",
    "animated.gif",
]
SHAPES = {
    "one_pixel.png": (1, 1),
    "png_named.jpg": (48, 64),
    "deep16.png": (48, 64),
    "gray.png": (48, 64),
    "rgba.png": (48, 64),
    "palette.png": (8, 8),
    "exif_rotated.jpg": (60, 40),
    "long_thin.png": (16, 4000),
    "cmyk.jpg": (48, 64),
    "animated.gif": (10, 12),
}
#: Files made from ``photo()``, and how far from it each may read (JPEG and CMYK round trips lose a little).
FROM_PHOTO = {"png_named.jpg": 1e-6, "deep16.png": 1e-6, "gray.png": 0.01, "cmyk.jpg": 0.08}
REFUSED = {
    "truncated.jpg": "is truncated",
    "truncated.png": "is truncated",
    "empty.png": "empty",
    "bomb.png": "100000x100000 pixels, over the limit",
    "random_bytes.jpg": "not a readable image",
    "text.png": "not a readable image",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", CONVERTED)
def test_odd_images_are_converted_to_rgb_float(files: dict[str, Path], name: str) -> None:
    image = images.read_image(files[name])
    assert image.dtype == np.float32 and image.shape == (*SHAPES[name], 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    if name in FROM_PHOTO:  # the picture itself survives the conversion, not just the array's form
        expected = photo()[:, :, ::-1].astype(np.float32) / 255
        if name == "gray.png":
            expected = cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY)[:, :, None].astype(np.float32) / 255
        assert np.abs(image - expected).mean() < FROM_PHOTO[name]
    else:
        assert image.max() - image.min() > 0.05 or name == "one_pixel.png"
        if name == "one_pixel.png":
            np.testing.assert_allclose(image, 128 / 255, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_broken_images_fail_with_one_line(files: dict[str, Path], name: str) -> None:
    with pytest.raises(ImageError, match=REFUSED[name]) as info:
        images.read_image(files[name])
    assert "\n" not in str(info.value) and name in str(info.value)


def test_bomb_is_refused_from_its_header_before_decoding(files: dict[str, Path], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_decode(*args: object) -> None:
        raise AssertionError("decoded a file its header already ruled out")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    with pytest.raises(ImageError, match="limit of 67108864 pixels"):
        images.read_image(files["bomb.png"])


def test_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        images.read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        images.read_image(tmp_path)


def test_pixel_limit_names_the_limit(files: dict[str, Path]) -> None:
    with pytest.raises(ImageError, match="limit of 1000 pixels"):
        images.read_image(files["png_named.jpg"], max_pixels=1000)


def test_conversions_keep_the_picture(files: dict[str, Path]) -> None:
    base = images.read_image(files["png_named.jpg"])
    np.testing.assert_allclose(images.read_image(files["deep16.png"]), base, atol=1e-6)
    gray = images.read_image(files["gray.png"])
    assert np.allclose(gray[:, :, 0], gray[:, :, 1]) and np.allclose(gray[:, :, 1], gray[:, :, 2])
    rgba = images.read_image(files["rgba.png"])  # half transparent over white: brighter than the photo
    np.testing.assert_allclose(rgba, base * (128 / 255) + (1 - 128 / 255), atol=2e-3)
    palette = images.read_image(files["palette.png"])
    assert np.allclose(palette[0, 0], [1, 0, 0]) and np.allclose(palette[0, 1], [1, 1, 1])  # red; clear->white
    assert images.read_image(files["animated.gif"]).mean() < 0.4  # the first (dark) frame


def test_exif_orientation_is_honoured(files: dict[str, Path]) -> None:
    stored = photo(40, 60)  # 60 wide, 40 high; EXIF orientation 6 = rotate 90 degrees clockwise
    image = images.read_image(files["exif_rotated.jpg"])
    assert image.shape[:2] == (60, 40)
    expected = cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE)[:, :, ::-1].astype(np.float32) / 255
    assert np.abs(image - expected).mean() < 0.03


def test_load_resizes_long_side_and_keeps_aspect(files: dict[str, Path]) -> None:
    tensor = images.load(files["png_named.jpg"], long_side=32)  # 64x48 -> 32x24
    assert tensor.shape == (1, 3, 24, 32) and tensor.dtype == torch.float32


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_save_round_trip_and_atomic(tmp_path: Path, suffix: str) -> None:
    image = gradient_image(20, 30)  # smooth: JPEG keeps it close
    path = tmp_path / "sub" / f"out{suffix}"
    images.save(image, path)
    back = images.load(path)
    assert back.shape == image.shape
    assert (back - image).abs().mean() < (0.003 if suffix == ".png" else 0.02)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_bad_output_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.png, \.jpg, \.jpeg, \.tif or \.tiff"):
        images.save(torch.rand(1, 3, 4, 4), tmp_path / "out.gif")
    assert not list(tmp_path.iterdir())
