"""The web page's API (engine.web) through FastAPI's test client, on random weights (labelled so on the page):
uploads checked as CLI inputs are, hostile bodies and parameters refused with a message, jobs queued one at a
time, stopped, downloaded, and kept while no page is open."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra: pip install -e '.[web]' (the dev extra has it)")

from fastapi.testclient import TestClient

from nst_engine import images
from nst_engine.export.model_file import inspect
from nst_engine.spec import ModelSpec
from nst_engine.web.app import ServerSettings, create_app, samples_in
from nst_engine.web.guard import AllowedHosts
from tests.images_corpus import corpus, png_header_only


def _settings(model_path: Path, shared_images: Path, **changes: Any) -> ServerSettings:
    settings = ServerSettings(ModelSpec(model=model_path), inspect(model_path), samples_in(shared_images),
                              max_size=256, max_steps=5000, max_queued=2, max_upload_bytes=1 << 20)  # fmt: skip
    settings.defaults = {"size": 48, "steps": 3, "style_weight": 3e6}
    settings.hosts = AllowedHosts("127.0.0.1", ["testserver"])  # the test client's Host
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


@pytest.fixture()
def client(model_path: Path, shared_images: Path):  # type: ignore[no-untyped-def]
    with TestClient(create_app(_settings(model_path, shared_images))) as c:
        yield c


def _wait(client: TestClient, job_id: str, states: tuple[str, ...], seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = next(j for j in client.get("/api/jobs").json() if j["id"] == job_id)
        if job["state"] in states:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not {states} in {seconds}s: {job}")


def _upload(client: TestClient, data: bytes, name: str = "photo.png") -> Any:
    return client.post("/api/uploads", files={"file": (name, data, "application/octet-stream")})


def test_info_says_the_weights_are_random_and_lists_the_samples(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["pretrained"] is False and "random" in info["weights"]
    assert "content_turtle.jpg" in info["samples"] and "histogram" in info["colors"]
    assert info["presets"]["gatys"]["style_weight"] == 5e3  # the page fills its fields from these
    page = client.get("/")
    assert page.status_code == 200 and 'id="preview"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/samples/content_turtle.jpg").content[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("text.png", "not an image"),
        ("truncated.jpg", "truncated"),
        ("empty.png", "empty"),
        ("bomb.png", "over the limit of"),
        ("random_bytes.jpg", ""),
    ],
)
def test_hostile_uploads_are_refused_with_the_clis_message_and_leave_nothing(
    client: TestClient, tmp_path: Path, name: str, said: str
) -> None:
    files = corpus(tmp_path / "corpus")
    response = _upload(client, files[name].read_bytes(), f"../../etc/{name}")
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert said in detail and f"'{name}'" in detail  # the browser's name, never the server's path
    assert "nst-engine-serve-" not in detail
    folder = client.app.state.uploads_folder()  # type: ignore[attr-defined]
    assert list(folder.iterdir()) == []


def test_an_upload_is_stored_under_a_name_the_server_makes(client: TestClient, shared_images: Path) -> None:
    data = (shared_images / "content_turtle.jpg").read_bytes()
    response = _upload(client, data, "../../../../tmp/evil name.jpg")
    assert response.status_code == 200, response.text
    item = response.json()
    assert item["name"] == "evil name.jpg" and len(item["id"]) == 16
    folder = client.app.state.uploads_folder()  # type: ignore[attr-defined]
    assert [p.name for p in folder.iterdir()] == [f"{item['id']}.upload"]
    assert not Path("/tmp/evil name.jpg").exists()
    thumb = client.get(f"/api/uploads/{item['id']}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    for probe in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "0" * 15 + "g"):
        assert client.get(f"/api/uploads/{probe}/thumbnail.jpg").status_code == 404
    assert client.get("/api/samples/..%2FCREDITS.md").status_code == 404
    assert client.get("/api/samples/CREDITS.md").status_code == 404  # in the folder, not an image


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    big = _upload(client, b"\x89PNG" + b"\x00" * (2 << 20))
    assert big.status_code == 413 and "limit of 1 MiB" in big.json()["detail"]
    streamed = client.post("/api/jobs", content=iter([b"{" + b" " * (1 << 19)] * 4),
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"size": 100000}, "over this server's limit of 256 px"),
        ({"size": 8}, "size must be 16 or more, not 8"),
        ({"steps": -1}, "steps"),
        ({"steps": 10**6}, "over this server's limit of 5000"),
        ({"style_weight": -5}, "style weight"),
        ({"size": "48; rm -rf /"}, "size must be int"),
        ({"size": True}, "size must be int"),
        ({"preserve_colors": "sepia"}, "preserve colors"),
        ({"preset": "picasso"}, "unknown preset"),
        ({"preset": "gatys", "size": None}, "size 512 is over this server's limit of 256 px"),  # the preset's size
        ({"content": "sample:../../etc/passwd"}, "content must be upload:ID or sample:NAME"),
        ({"content": "/etc/passwd"}, "content must be upload:ID or sample:NAME"),
        ({"style": "upload:0123456789abcdef"}, "no upload"),
        ({"output": "/tmp/x.png"}, "unknown field 'output'"),
        ({"init": "/etc/passwd"}, "init must be one of content, random, mean"),  # never a server path
        ({"init": "../shared/images/style_great_wave.jpg"}, "init must be one of"),
        ({"scales": 40}, "scales must be 1 to 4"),
        ({"seed": -1}, "seed must be 0 or more"),
        ({"style_loss": "slicd"}, "did you mean 'sliced'"),
        ({"content_weight": "1e9; drop"}, "content_weight must be int or float"),
        ({"blend": 0.5}, "blend needs style2"),
        ({"region_mask": "sample:content_turtle.jpg"}, "region_mask needs style2"),
        ({"style2": "sample:style_the_scream.jpg", "blend": 1.5}, "between 0 and 1"),
        ({"style2": "/etc/passwd"}, "style2 must be upload:ID or sample:NAME"),
        ({"keep_mask": "../../etc/passwd"}, "keep_mask must be upload:ID or sample:NAME"),
    ],
)
def test_hostile_parameters_are_refused_by_the_clis_checks(
    client: TestClient, change: dict[str, Any], said: str
) -> None:
    body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 48, "steps": 3}
    response = client.post("/api/jobs", json={k: v for k, v in (body | change).items() if v is not None})
    assert response.status_code == 400, response.text
    assert said in response.json()["detail"]
    assert client.get("/api/jobs").json() == []
    assert client.post("/api/jobs", content=b"[1, 2]", headers={"Content-Type": "application/json"}).status_code == 400
    assert (
        client.post("/api/jobs", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    )


def _mask_png(width: int, height: int, white_from: float) -> bytes:
    import torch

    mask = torch.zeros(1, 3, height, width)
    mask[..., int(width * white_from) :] = 1.0
    return images.encode_png(mask)


def test_a_second_style_is_blended_or_placed_by_a_region_mask_and_a_keep_mask_keeps_the_photo(
    client: TestClient, shared_images: Path
) -> None:
    body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 48, "steps": 2}
    blended = client.post("/api/jobs", json=body | {"style2": "sample:style_the_scream.jpg", "blend": 0.25})
    assert blended.status_code == 201, blended.text
    done = _wait(client, blended.json()["id"], ("done", "failed"))
    assert done["state"] == "done", done["message"]
    assert done["settings"]["style"] == "style_great_wave.jpg + style_the_scream.jpg"
    assert done["settings"]["blend"] == [0.75, 0.25]
    trace = client.get(f"/api/jobs/{done['id']}/trace.json").json()
    assert len(trace["styles"]) == 2 and trace["settings"]["style_blend_weights"] == [0.75, 0.25]
    region = _upload(client, _mask_png(64, 48, 0.5), "halves.png").json()["id"]
    keep = _upload(client, _mask_png(64, 48, 0.9), "edge.png").json()["id"]
    placed = client.post(
        "/api/jobs",
        json=body
        | {"style2": "sample:style_the_scream.jpg", "region_mask": f"upload:{region}", "keep_mask": f"upload:{keep}"},
    )
    done = _wait(client, placed.json()["id"], ("done", "failed"))
    assert done["state"] == "done", done["message"]
    assert (done["settings"]["region_mask"], done["settings"]["keep_mask"]) == ("halves.png", "edge.png")
    result = images.decode_png(client.get(f"/api/jobs/{done['id']}/result.png").content)
    photo = images.load(shared_images / "content_turtle.jpg", 48)[0].permute(1, 2, 0).numpy()
    assert result.shape == photo.shape
    assert abs(result[:, 45:] - photo[:, 45:]).max() < 0.02  # the keep mask's white edge (cols 43+) is the photo
    tall = _upload(client, _mask_png(20, 60, 0.5), "tall.png").json()["id"]
    wrong = client.post("/api/jobs", json=body | {"style2": "sample:style_the_scream.jpg",
                                                  "region_mask": f"upload:{tall}"})  # fmt: skip
    failed = _wait(client, wrong.json()["id"], ("done", "failed"))
    assert failed["state"] == "failed" and "different aspect ratios" in failed["message"]


def test_jobs_run_one_at_a_time_queue_with_positions_and_the_queue_is_bounded(client: TestClient) -> None:
    body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 64}
    first = client.post("/api/jobs", json=body | {"steps": 5000}).json()
    _wait(client, first["id"], ("running",))
    second = client.post("/api/jobs", json=body | {"steps": 3})
    third = client.post("/api/jobs", json=body | {"steps": 3})
    assert (second.status_code, third.status_code) == (201, 201)
    assert (second.json()["position"], third.json()["position"]) == (1, 2)
    full = client.post("/api/jobs", json=body)
    assert full.status_code == 429 and "already waiting" in full.json()["detail"]
    states = {j["id"]: j for j in client.get("/api/jobs").json()}
    assert [j["state"] for j in states.values()] == ["running", "queued", "queued"]
    assert client.post(f"/api/jobs/{third.json()['id']}/stop").json()["state"] == "cancelled"
    while _wait(client, first["id"], ("running",))["step"] < 2:
        time.sleep(0.05)
    client.post(f"/api/jobs/{first['id']}/stop")
    stopped = _wait(client, first["id"], ("stopped", "done"))
    assert stopped["state"] == "stopped" and 0 < stopped["step"] < 5000 and stopped["has_result"]
    done = _wait(client, second.json()["id"], ("done",))
    assert done["step"] == 3
    png = client.get(f"/api/jobs/{first['id']}/result.png")
    assert png.status_code == 200 and images.decode_png(png.content).shape[:2] == (48, 64)
    trace = client.get(f"/api/jobs/{done['id']}/trace.json").json()
    assert len(trace["steps"]) == 3 and trace["weights"]["pretrained"] is False
    assert client.get("/api/jobs/nope/result.png").status_code == 404


def test_the_event_stream_sends_steps_and_previews_and_a_late_page_gets_the_history(
    client: TestClient, model_path: Path, shared_images: Path
) -> None:
    body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 64, "steps": 5000}
    job = client.post("/api/jobs", json=body).json()
    _wait(client, job["id"], ("running",))
    while next(j for j in client.get("/api/jobs").json())["step"] < 3:
        time.sleep(0.05)  # steps done with no page open: the job does not wait for one
    kinds: list[str] = []
    seen: dict[str, Any] = {}
    with client.stream("GET", "/api/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            elif line.startswith("data: "):
                seen[kinds[-1]] = json.loads(line[6:])
                if kinds.count("preview") >= 2:
                    break
    client.post(f"/api/jobs/{job['id']}/stop")
    assert kinds[0] == "jobs" and kinds[1] == "history" and len(seen["history"]["losses"]) >= 3
    assert "step" in kinds and seen["preview"]["image"].startswith("data:image/jpeg;base64,")
    assert seen["preview"]["width"] == 64 and seen["step"]["t"] <= time.time()


def test_shutdown_stops_the_running_job_at_a_step_and_removes_the_uploads(
    model_path: Path, shared_images: Path
) -> None:
    app = create_app(_settings(model_path, shared_images))
    with TestClient(app) as client:
        _upload(client, (shared_images / "content_turtle.jpg").read_bytes())
        folder = app.state.uploads_folder()
        body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 64}
        job = client.post("/api/jobs", json=body | {"steps": 5000}).json()
        _wait(client, job["id"], ("running",))
        waiting = client.post("/api/jobs", json=body).json()
        queue = app.state.queue()
    # Leaving the block runs the app's shutdown, as Ctrl-C does in nst-engine serve.
    assert queue.jobs[job["id"]].state == "stopped" and queue.jobs[job["id"]].result is not None
    assert queue.jobs[waiting["id"]].state == "cancelled"
    assert not folder.exists()


def test_a_bomb_header_is_refused_without_decoding(client: TestClient) -> None:
    response = _upload(client, png_header_only(60_000, 60_000), "huge.png")
    assert response.status_code == 400 and "60000x60000 pixels" in response.json()["detail"]


def test_only_loopback_hosts_go_without_the_warning_and_a_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from typer.testing import CliRunner

    from nst_engine.cli import app
    from nst_engine.cli.serve import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org"))
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the web extra were not installed
    result = CliRunner().invoke(app, ["serve", "--weights", "random"])
    assert result.exit_code == 1 and "pip install 'nst-engine[web]'" in " ".join(result.output.split())


def test_pages_are_sent_only_the_job_that_changed_and_history_is_bounded(model_path: Path, shared_images: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    """What a page is sent after it connects: one job's summary per change (never every job), and a note when a
    finished job is dropped from the bounded history."""
    import asyncio

    from nst_engine.config import StyleConfig
    from nst_engine.web.jobs import Hub, JobQueue

    async def scenario() -> list[dict[str, Any]]:
        hub = Hub()
        inbox = hub.subscribe()
        queue = JobQueue(ModelSpec(model=model_path), hub, tmp_path / "results", max_queued=4, max_history=2)
        config = StyleConfig(size=32, steps=2000)
        content, style = shared_images / "content_turtle.jpg", shared_images / "style_great_wave.jpg"
        for _ in range(4):
            job = queue.submit(config, content, style, {}, None)
            queue.stop(job.id)
            for _ in range(600):
                if job.state in ("stopped", "cancelled"):
                    break
                await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, queue.close)
        await asyncio.sleep(0.2)
        events = []
        while not inbox.empty():
            events.append(inbox.get_nowait())
        assert len(queue.jobs) <= 2 and len(list((tmp_path / "results").glob("*.png"))) <= 2
        return events

    events = asyncio.run(scenario())
    kinds = {e["type"] for e in events}
    assert "jobs" not in kinds and "job" in kinds and "dropped" in kinds
    assert all(isinstance(e["job"], dict) and "id" in e["job"] for e in events if e["type"] == "job")
    assert any("keeps the last 2" in e["why"] for e in events if e["type"] == "dropped")
