"""Shared fixtures: one exported random-weight model per session, the shared sample images, small tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nst_engine.layers import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from nst_engine.weights import Weights, random_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = Path(os.environ.get("NST_ENGINE_SAMPLES", ROOT.parent / "shared" / "images"))
LAYERS = DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test touches the user's caches: targets, models and torch hub downloads go to a temporary folder."""
    root = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("NST_ENGINE_CACHE", "TORCH_HOME")}
    os.environ["NST_ENGINE_CACHE"], os.environ["TORCH_HOME"] = str(root / "nst"), str(root / "torch")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """../shared/images: a missing folder is a broken checkout, so it fails rather than skips."""
    assert (SHARED_IMAGES / "content_turtle.jpg").is_file(), f"sample images not found at {SHARED_IMAGES}"
    return SHARED_IMAGES


@pytest.fixture(scope="session")
def weights() -> Weights:
    return random_weights(0)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory, weights: Weights) -> Path:
    """The default-layer VGG19 with random:0 weights, exported once for the whole session."""
    from nst_engine.export.onnx_export import export

    path = tmp_path_factory.mktemp("model") / "vgg19-random0.onnx"
    export(weights, path, LAYERS, "max")
    return path


@pytest.fixture(scope="session")
def model_info(model_path: Path):  # type: ignore[no-untyped-def]
    from nst_engine.export.model_file import inspect

    return inspect(model_path)


@pytest.fixture()
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache for each test (outside tmp_path), also set through the environment for subprocesses."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NST_ENGINE_CACHE", str(path))
    yield path


def gradient_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random (1, 3, H, W) image in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def poisoned_quadratic(target: torch.Tensor, poison_at: set[int]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Objective |x - target|^2 whose loss is NaN on the calls numbered in ``poison_at`` (1-based)."""
    calls = {"n": 0}

    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        loss = (image - target).pow(2).sum()
        return {"total": loss * float("nan") if calls["n"] in poison_at else loss}

    return objective


@pytest.fixture()
def style(tmp_path: Path, shared_images: Path) -> Path:
    """The Great Wave at 48 px, as a PNG in the test's folder."""
    from nst_engine import images

    path = tmp_path / "paint.png"
    images.save(images.load(shared_images / "style_great_wave.jpg", 48), path)
    return path


@pytest.fixture()
def pair(tmp_path: Path, style: Path, shared_images: Path) -> tuple[Path, Path]:
    """(the turtle at 48 px, the Great Wave at 48 px), as PNGs in the test's folder."""
    from nst_engine import images

    content = tmp_path / "photo.png"
    images.save(images.load(shared_images / "content_turtle.jpg", 48), content)
    return content, style
