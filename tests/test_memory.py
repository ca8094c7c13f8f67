"""Resource limits: the estimate, the refusal before a run, and out-of-memory in mid-run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nst_engine import memory
from nst_engine.config import StyleConfig
from nst_engine.errors import ResourceError
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets
from tests.conftest import gradient_image


def test_estimate_grows_with_pixels_history_and_precision() -> None:
    config = StyleConfig()
    small, large = (memory.estimate_bytes(s, s, config, "cpu") for s in (256, 512))
    per_pixel_small = (small - memory.BASE_BYTES["cpu"]) / 256**2
    per_pixel_large = (large - memory.BASE_BYTES["cpu"]) / 512**2
    assert abs(per_pixel_small - per_pixel_large) < 1e-6 * per_pixel_large  # linear in pixels
    assert memory.estimate_bytes(512, 512, config.replace(lbfgs_history=100), "cpu") > large
    assert memory.estimate_bytes(512, 512, config.replace(precision="bf16"), "cuda") < memory.estimate_bytes(
        512, 512, config, "cuda"
    )
    # Cutting the network earlier needs less.
    shallow = config.replace(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"))
    assert memory.estimate_bytes(512, 512, shallow, "cpu") < large


def test_largest_fitting_size_is_the_boundary() -> None:
    config = StyleConfig()
    budget = memory.estimate_bytes(300, 400, config, "cpu")
    size = memory.largest_fitting_size(3000, 4000, config, "cpu", budget)
    assert size == 400
    assert memory.estimate_bytes(300, 400, config, "cpu") <= budget < memory.estimate_bytes(301, 401, config, "cpu")


def test_a_run_that_cannot_fit_fails_at_once_naming_the_size(
    model_info, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # Refuse, as before tiling (auto would tile); fp32, the precision the estimate's figures are for.
    config = StyleConfig(size=256, steps=3, tile="off", precision="fp32")
    budget = memory.estimate_bytes(96, 128, config, "cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device: math.ceil(budget / 0.9) + 1)
    calls = []
    targets = DirectTargets(lambda x: calls.append(1) or {})  # type: ignore[func-returns-value]
    with pytest.raises(ResourceError, match=r"the largest size that fits is --size 128\b") as info:
        stylize(
            gradient_image(192, 256),
            [gradient_image(64, 64)],
            config=config,
            net=model_info.torch_module(config.layers),
            targets=targets,
        )
    assert not calls, "nothing may run before the check"
    assert "\n" not in str(info.value)


def test_out_of_memory_in_mid_run_is_reported_the_same_way(
    model_info, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import nst_engine.stylize as stylize_module

    def boom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(stylize_module, "optimize", boom)
    config = StyleConfig(size=64, steps=3)
    with pytest.raises(ResourceError, match=r"ran out of cpu memory at 64x48; try --size \d+ or less"):
        stylize(
            gradient_image(48, 64),
            [gradient_image(64, 64)],
            config=config,
            net=model_info.torch_module(config.layers),
            targets=DirectTargets(OnnxEncoder(model_path, "cpu")),
        )


def test_cli_refuses_an_oversized_run_without_writing(
    tmp_path: Path, model_path: Path, shared_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from nst_engine.cli import app

    monkeypatch.setattr(memory, "available_bytes", lambda device: 900 * 2**20)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(shared_images / "content_turtle.jpg"),
            str(shared_images / "style_great_wave.jpg"),
            "-o",
            str(out),
            "--model",
            str(model_path),
            "--size",
            "4096",
            "--tile",
            "off",
        ],
    )
    assert result.exit_code == 1 and "largest size that fits is --size" in result.stderr
    assert not out.exists()


def test_auto_tiling_refuses_at_once_what_does_not_fit_even_tiled(model_info, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config = StyleConfig(size=4096, steps=3)  # --tile auto
    monkeypatch.setattr(memory, "available_bytes", lambda device: 900 * 2**20)
    calls = []
    targets = DirectTargets(lambda x: calls.append(1) or {})  # type: ignore[func-returns-value]
    with pytest.raises(ResourceError, match=r"does not fit in 0.8 GiB even tiled") as info:
        stylize(
            gradient_image(3072, 4096),
            [gradient_image(64, 64)],
            config=config,
            net=model_info.torch_module(config.layers),
            targets=targets,
        )
    assert not calls and "\n" not in str(info.value)
