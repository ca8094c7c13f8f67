"""The page in a real headless browser: Debian's Chromium driven by Playwright, against a real
``nst-engine serve`` process on 127.0.0.1 (random weights, small images). Open the page, upload two images,
start, see the preview change, stop, download the PNG; then Ctrl-C stops the server cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from nst_engine import images


def browser_path() -> str | None:
    """Chromium from the system's packages (apt-get install chromium), or $NST_ENGINE_BROWSER."""
    for name in (os.environ.get("NST_ENGINE_BROWSER"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``nst-engine serve`` on a free port of 127.0.0.1; the process and the address it printed."""
    command = [sys.executable, "-m", "nst_engine", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert server.stderr is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if found:
            return server, found.group(1)
    server.kill()
    raise AssertionError("the server did not say its address:\n" + "".join(seen))


def stop_server(server: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C, as a user would; the exit code and what it said."""
    server.send_signal(signal.SIGINT)
    try:
        _, err = server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        raise
    return server.returncode, err


@pytest.mark.slow
def test_upload_start_watch_stop_and_download_in_a_real_browser(
    model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright: pip install playwright")
    executable = browser_path()
    if executable is None:
        pytest.skip("no Chromium to drive: apt-get install chromium (CI installs it)")
    server, url = start_server("--model", str(model_path), "--preview-every", "0.05", "--samples", str(shared_images))
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("#weights:has-text('random')")
            assert page.is_visible("#random-warning")  # random weights are said plainly
            page.set_input_files("#content-file", str(shared_images / "content_turtle.jpg"))
            page.wait_for_selector("#content-thumb:not([hidden])")
            page.set_input_files("#style-file", str(shared_images / "style_great_wave.jpg"))
            page.wait_for_selector("#style-thumb:not([hidden])")
            page.fill("#size", "64")
            page.fill("#steps", "2000")
            page.click(".settings .more summary")  # the settings kept out of the way
            page.select_option("#init", "mean")
            page.fill("#seed", "3")
            # A second painting blended at 30%, and the right edge of the photo kept.
            page.click("#more-styles summary")
            page.select_option("#style2-sample", "style_the_scream.jpg")
            page.wait_for_selector("#style2-thumb:not([hidden])")
            page.fill("#blend", "30")
            keep = tmp_path / "keep.png"
            mask = torch.zeros(1, 3, 48, 64)
            mask[..., 56:] = 1.0
            images.save(mask, keep)
            page.set_input_files("#keep-file", str(keep))
            page.wait_for_selector("#keep-thumb:not([hidden])")
            page.click("#start")
            page.wait_for_selector("#preview:not([hidden])", timeout=60_000)
            made = _get(url + "api/jobs")[-1]["settings"]
            assert (made["init"], made["seed"], made["style_loss"]) == ("mean", 3, "gram"), made
            assert made["blend"] == [0.7, 0.3] and made["keep_mask"] == "keep.png", made
            assert made["style"] == "style_great_wave.jpg + style_the_scream.jpg"
            page.click("#clear-extras")
            assert page.is_hidden("#style2-thumb") and page.is_hidden("#keep-thumb")
            # Before and after: the slider uncovers the photo from the left.
            page.wait_for_selector("#compare-label:not([hidden])")
            assert page.is_hidden("#before")
            page.fill("#compare", "50")
            _until(page, "!document.getElementById('before').hidden && "
                         "document.getElementById('before').style.clipPath.includes('50%')")  # fmt: skip
            sources = {page.get_attribute("#preview", "src")}
            deadline = time.monotonic() + 60
            while len(sources) < 3 and time.monotonic() < deadline:  # the first image and two changes
                page.wait_for_timeout(100)
                sources.add(page.get_attribute("#preview", "src"))
            assert len(sources) >= 3, "the preview did not change twice"
            steps = int(page.get_attribute("#status", "data-step") or 0)
            assert steps > 0
            _until(page, "document.getElementById('loss-chart').toDataURL().length > 3000")  # a curve
            # The page closed and opened again: the job ran on, and the new page shows it with its curve so far.
            page.close()
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#preview:not([hidden])", timeout=60_000)
            _until(page, f"Number(document.getElementById('status').dataset.step) > {steps}")
            assert page.inner_text("#status").startswith("Step ")
            _until(page, "document.getElementById('loss-chart').toDataURL().length > 3000")
            page.click("#stop")
            page.wait_for_selector("#download-png", timeout=60_000)
            assert "stopped" in page.inner_text("#status")
            with page.expect_download() as download:
                page.click("#download-png")
            saved = tmp_path / "result.png"
            download.value.save_as(saved)
            assert images.read_image(saved).shape[:2] == (48, 64)
            page.wait_for_selector("#results figure img")  # the result joins the comparison gallery
            # A hostile upload gets its message on the page.
            bad = tmp_path / "notes.png"
            bad.write_text("not an image at all")
            page.set_input_files("#content-file", str(bad))
            page.wait_for_selector("#message:has-text('not an image')")
            # One job running, one queued: the page shows the running one, and Stop stops that one; the queued
            # one is cancelled only by its own button, and stays listed.
            long_run = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg",
                        "size": 64, "steps": 2000}  # fmt: skip
            first = _post(url + "api/jobs", long_run)["id"]
            _wait_state(url, first, "running")
            second = _post(url + "api/jobs", long_run)["id"]
            page.wait_for_selector(f"#jobs li.watched[data-id='{first}']")
            page.click("#stop")
            assert _wait_state(url, first, "stopped")
            _wait_state(url, second, "running")  # not cancelled: it runs once the first has stopped
            page.click(f"#jobs li[data-id='{second}'] button.act")
            _wait_state(url, second, "stopped")
            page.wait_for_selector(f"#jobs li.stopped[data-id='{second}']")
            assert not errors, errors  # nothing the Content-Security-Policy refused, no script errors
            browser.close()
        # Ctrl-C with a job running: it stops after its current step and the server exits cleanly.
        body = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg", "size": 64,
                "steps": 2000}  # fmt: skip
        job = _post(url + "api/jobs", body)
        while _get(url + "api/jobs")[-1]["step"] < 2:
            time.sleep(0.05)
        assert _get(url + "api/jobs")[-1]["id"] == job["id"]
    finally:
        code, said = stop_server(server)
    assert code == 0, said
    assert "stopping: the running job ends after its current step" in said and "stopped" in said
    assert "Traceback" not in said


def _until(page: Any, expression: str, seconds: float = 60) -> None:
    """Wait for a page expression to be true, evaluated from outside the page: the page's Content-Security-Policy
    (no eval) refuses Playwright's in-page poller of wait_for_function."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true in {seconds}s: {expression}"
        page.wait_for_timeout(100)


def _wait_state(url: str, job_id: str, state: str, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(j["id"] == job_id and j["state"] == state for j in _get(url + "api/jobs")):
            return True
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not {state} in {seconds}s")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
