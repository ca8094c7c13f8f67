"""``--style-loss sliced`` through every front door and feature: the CLI, the API, the page, video, masks, blends,
coarse to fine, tiling and the cluster (random weights, tiny sizes: these check that it runs and is wired through,
bench/reports/cpu-2core-losses what it is worth)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from nst_engine import images
from nst_engine.api import Session, stylize_file
from nst_engine.config import StyleConfig
from nst_engine.spec import ModelSpec
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import random_weights
from tests.clips import panned, write_frames
from tests.conftest import LAYERS, gradient_image
from tests.test_nothing_lost import cli

SLICED = ["--style-loss", "sliced", "--sw-projections", "16"]


def test_the_cli_runs_it_and_the_trace_says_so(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    out, trace = tmp_path / "out.png", tmp_path / "trace.json"
    result = cli("stylize", *pair, "-o", out, "--model", model_path, "--size", "32", "--steps", "3", "--quiet",
                 "--trace", trace, *SLICED)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert images.load(out).shape[-1] == 32
    assert json.loads(trace.read_text())["settings"]["style_loss"] == "sliced"


def test_the_api_runs_it_and_a_seed_gives_the_same_bytes(pair: tuple[Path, Path], model_path: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        stylize_file(*pair, out, model=model_path, size=32, steps=3, style_loss="sliced", sw_projections=16)
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.fixture(scope="module")
def net() -> VGGFeatures:
    net = VGGFeatures(LAYERS)
    net.load_features(random_weights(0).state)
    return net


def _run(net: VGGFeatures, styles: list[torch.Tensor], masks: list[torch.Tensor] | None, settings: dict[str, object]):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"size": 64, "steps": 8, "precision": "fp32", "style_loss": "sliced"}
    config = StyleConfig(**(values | {"sw_projections": 16} | settings))  # type: ignore[arg-type]
    return stylize(gradient_image(48, 64, 1), styles, config=config, net=net, targets=DirectTargets(net),
                   style_masks=masks)  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "two_styles", "masked"),
    [({}, False, False), ({"scales": 2}, False, False), ({"tile": "32"}, False, False),
     ({"style_blend_weights": (0.3, 0.7)}, True, False), ({}, True, True), ({"tile": "32"}, True, True)],
    ids=["whole", "coarse-to-fine", "tiled", "blend", "masks", "tiled-masks"],
)  # fmt: skip
def test_it_lowers_the_style_loss_in_every_mode(net: VGGFeatures, settings: dict[str, object], two_styles: bool,
                                                masked: bool) -> None:  # fmt: skip
    styles = [gradient_image(40, 40, 2), gradient_image(56, 40, 3)][: 2 if two_styles else 1]
    left = torch.zeros(1, 1, 48, 64)
    left[..., :32] = 1
    result = _run(net, styles, [left, 1 - left] if masked else None, settings)
    last = [s for s in result.steps if s.scale == s.scales - 1]
    assert last[-1].losses["style"] < 0.9 * last[0].losses["style"]
    assert torch.isfinite(result.image).all()


def test_the_page_runs_it(model_path: Path, shared_images: Path) -> None:
    pytest.importorskip("fastapi", reason="the web extra: pip install -e '.[web]' (the dev extra has it)")
    from fastapi.testclient import TestClient

    from nst_engine.web.app import create_app
    from tests.test_web import _settings, _wait

    with TestClient(create_app(_settings(model_path, shared_images))) as client:
        info = client.get("/api/info").json()
        assert "sliced" in info["style_losses"]
        body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "style_loss": "sliced"}
        made = client.post("/api/jobs", json=body)
        assert made.status_code == 201, made.text
        job = _wait(client, made.json()["id"], ("done", "failed"))
        assert job["state"] == "done" and job["settings"]["style_loss"] == "sliced", job
        refused = client.post("/api/jobs", json=body | {"style_loss": "slicd"})
        assert refused.status_code == 400 and "sliced" in refused.json()["detail"]


def test_video_runs_it(tmp_path: Path, style: Path, model_path: Path) -> None:
    source = write_frames(panned(3, 32, 48), tmp_path / "in")
    result = cli("video", source, "-o", tmp_path / "out", "--style", style, "--model", model_path, "--size", "32",
                 "--steps", "2", "--frame-steps", "2", "--quiet", *SLICED)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_the_cluster_runs_it_with_the_local_runners_bytes(model_path: Path, shared_images: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    ray = pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]' (the dev extra has it)")
    from nst_engine.cluster import ClusterRunner
    from nst_engine.jobs import Job

    photo = tmp_path / "photo.png"
    images.save(images.load(shared_images / "content_turtle.jpg", 40), photo)
    config = StyleConfig(size=32, steps=3, style_loss="sliced", sw_projections=16)

    def session() -> Session:
        return Session(config, [shared_images / "style_great_wave.jpg"], model=ModelSpec(model=model_path))

    local, remote = Job(photo, tmp_path / "local.png"), Job(photo, tmp_path / "ray.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's share: bytes are equal for equal thread counts
    try:
        session().run([local])
    finally:
        torch.set_num_threads(threads)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        deadline = time.monotonic() + 300
        summary = ClusterRunner(session(), None, 2).run([remote])
        assert time.monotonic() < deadline and summary.count("done") == 1
    finally:
        if started:
            ray.shutdown()
    assert remote.output.read_bytes() == local.output.read_bytes()
