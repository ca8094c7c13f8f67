"""The web case (issue 25): how long a step's preview takes to reach a real browser, and what the preview costs
the optimisation: steps per second with the page open and with it closed, interleaved in one run. A real
``uvicorn`` server on 127.0.0.1 and Debian's Chromium driven by Playwright; a screenshot of the page mid-run."""

from __future__ import annotations

import shutil
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from nst_engine.bench.cases import Setup
from nst_engine.errors import ConfigError
from nst_engine.export.model_file import inspect
from nst_engine.spec import ModelSpec


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise ConfigError("the web case needs Chromium: apt-get install chromium")


def web_case(setup: Setup, size: int, steps: int, rounds: int, screenshot: Path | None) -> list[dict[str, Any]]:
    import httpx
    import uvicorn
    from playwright.sync_api import sync_playwright

    from nst_engine.web.app import ServerSettings, create_app

    samples = {setup.content.name: setup.content, setup.style.name: setup.style}
    content_name, style_name = list(samples)
    settings = ServerSettings(ModelSpec(model=setup.model_path), inspect(setup.model_path), samples,
                              max_size=max(1024, size), max_steps=max(2000, steps))  # fmt: skip
    settings.defaults = {"size": size, "steps": steps, "style_weight": 3e6}
    app = create_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    while not server.started:
        time.sleep(0.05)
    body = {"content": f"sample:{content_name}", "style": f"sample:{style_name}", "size": size}
    rows: list[dict[str, Any]] = []
    try:
        with sync_playwright() as p, httpx.Client(base_url=url, timeout=60) as api:
            browser = p.chromium.launch(executable_path=_browser(), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1050})

            def run(watched: bool, count: int, shot: Path | None = None) -> dict[str, Any]:
                if watched:
                    page.goto(url)
                    while not page.evaluate("window.nstPreviews !== undefined"):  # the page's CSP: no in-page eval
                        page.wait_for_timeout(50)
                else:
                    page.goto("about:blank")  # the page closed: no event stream, no previews encoded
                if shot is None:
                    job = api.post("/api/jobs", json=body | {"steps": count}).json()
                else:  # as a user would: samples picked on the page, its fields filled in, Start pressed
                    page.select_option("#content-sample", content_name)
                    page.select_option("#style-sample", style_name)
                    page.fill("#size", str(size))
                    page.fill("#steps", str(count))
                    before = {j["id"] for j in api.get("/api/jobs").json()}
                    page.click("#start")
                    while not (new := [j for j in api.get("/api/jobs").json() if j["id"] not in before]):
                        time.sleep(0.05)
                    job = new[0]
                while True:
                    state = next(j for j in api.get("/api/jobs").json() if j["id"] == job["id"])
                    if shot is not None and state["step"] >= count * 0.6:
                        page.wait_for_timeout(300)  # the latest preview drawn
                        page.screenshot(path=str(shot))
                        shot = None
                    if state["state"] not in ("queued", "running"):
                        break
                    time.sleep(0.1)
                trace = api.get(f"/api/jobs/{job['id']}/trace.json").json()
                elapsed = [s["elapsed_s"] for s in trace["steps"]]
                rate = (len(elapsed) - 1) / (elapsed[-1] - elapsed[0])  # from the first step's end to the last's
                latencies = page.evaluate("window.nstLatencies") if watched else []
                return {"page": "open" if watched else "closed", "steps": len(elapsed), "steps_per_s": rate,
                        "previews": len(latencies), "latency_ms": latencies}  # fmt: skip

            setup.log(f"web: warm-up job at {size} px")
            run(True, 3)
            for i in range(rounds):
                for watched in (True, False) if i % 2 == 0 else (False, True):
                    setup.log(f"web: round {i + 1}, page {'open' if watched else 'closed'}, {steps} steps")
                    rows.append(run(watched, steps))
            if screenshot is not None:
                setup.log("web: a longer run for the screenshot")
                run(True, max(steps, 100), screenshot)
            browser.close()
        rows.append({"page": "encode", **_encode_cost(setup, size)})
    finally:
        server.should_exit = True
        thread.join(60)
    return rows


def _encode_cost(setup: Setup, size: int, repeats: int = 50) -> dict[str, Any]:
    """What one preview costs the job's thread: a JPEG of the image and its base64, as engine.web.jobs makes it."""
    import base64

    from nst_engine import images

    image = images.load(setup.content, size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        base64.b64encode(images.encode_jpeg(image))
        times.append(time.perf_counter() - start)
    return {"encode_ms": 1000 * statistics.median(times), "jpeg_bytes": len(images.encode_jpeg(image)),
            "height": int(image.shape[-2]), "width": int(image.shape[-1])}  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Web preview (nst-engine serve)",
        "",
        "A real uvicorn server on 127.0.0.1 and headless Chromium (Playwright) on the same machine. Latency: from "
        "the step's end on the server (the time stamp in its preview event) to the page's handler for that event, "
        "both on this machine's clock. Steps per second: from each job's trace, first step's end to last's; "
        "page open and page closed alternate.",
        "",
        "| page | steps | steps/s | previews | latency median (ms) | p90 | max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    encode = [r for r in rows if r["page"] == "encode"]
    rows = [r for r in rows if r["page"] != "encode"]
    for r in rows:
        lat = sorted(r["latency_ms"])
        if lat:
            p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
            shown = f"{statistics.median(lat):.1f} | {p90:.1f} | {lat[-1]:.1f}"
        else:
            shown = "| |"
        lines.append(f"| {r['page']} | {r['steps']} | {r['steps_per_s']:.3f} | {r['previews']} | {shown} |")
    opened = [r["steps_per_s"] for r in rows if r["page"] == "open"]
    closed = [r["steps_per_s"] for r in rows if r["page"] == "closed"]
    if opened and closed:
        ratio = statistics.median(opened) / statistics.median(closed)
        lines += ["", f"Median steps/s with the page open over closed: {ratio:.3f}."]
    for e in encode:
        lines += ["", f"One preview ({e['width']}x{e['height']} JPEG, {e['jpeg_bytes'] / 1024:.0f} KiB, base64) costs "
                  f"the job's thread {e['encode_ms']:.2f} ms, median of 50."]  # fmt: skip
    return [*lines, ""]
