"""``nst-engine serve`` under hostile use, against a real server process on 127.0.0.1 (random weights): DNS
rebinding (Host), cross-site requests (Origin, Referer, simple content types), security headers, bounded job
history, parser limits, and stop acting on the job named. Every request goes to 127.0.0.1 with a timeout, and the
server is stopped by its PID."""

from __future__ import annotations

import http.client
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra: pip install -e '.[web]' (the dev extra has it)")

from tests.test_web_browser import start_server, stop_server

SAMPLES = {"content": "sample:content_turtle.jpg", "style": "sample:style_great_wave.jpg"}


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request over a raw connection to 127.0.0.1, with exactly the headers given (Host included)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {"Host": self.host} | (headers or {})
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in sent.items():
                conn.putheader(key, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if chunked and body is not None:
                for start in range(0, len(body), 1 << 16):
                    piece = body[start : start + (1 << 16)]
                    try:
                        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        break  # the server answered and closed early, as it should for a body over the limit
                else:
                    conn.send(b"0\r\n\r\n")
            elif body is not None:
                conn.send(body)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def job(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Origin": self.origin}
        status, _, data = self.request("POST", "/api/jobs", json.dumps(body).encode(), headers)
        assert status == 201, data
        return json.loads(data)  # type: ignore[no-any-return]

    def jobs(self) -> dict[str, dict[str, Any]]:
        status, _, data = self.request("GET", "/api/jobs")
        assert status == 200, data
        return {j["id"]: j for j in json.loads(data)}

    def wait(self, job_id: str, states: tuple[str, ...], seconds: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.jobs().get(job_id)
            if job is not None and job["state"] in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not {states} in {seconds}s")

    def stop(self, job_id: str) -> dict[str, Any]:
        status, _, data = self.request("POST", f"/api/jobs/{job_id}/stop", b"", {"Origin": self.origin})
        assert status == 200, data
        return json.loads(data)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(model_path: Path, shared_images: Path) -> Iterator[Server]:
    process, url = start_server(
        "--model", str(model_path), "--samples", str(shared_images), "--max-history", "3",
        "--allow-host", "studio.example", "--max-upload-mb", "1", "--max-queued", "4",
    )  # fmt: skip
    running = Server(process, url)
    try:
        yield running
    finally:
        code, said = stop_server(process)
        assert code == 0, said
        assert "Traceback" not in said, said


@pytest.mark.parametrize("host", ["evil.com", "evil.com:8765", "127.0.0.1.evil.com", "", "localhost.evil.com"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/api/info"), ("GET", "/api/jobs"), ("POST", "/api/jobs")])
def test_dns_rebinding_a_foreign_host_name_gets_421(server: Server, host: str, method: str, path: str) -> None:
    body = json.dumps({**SAMPLES, "steps": 1}).encode() if method == "POST" else None
    headers = {"Host": host, "Content-Type": "application/json"}
    status, sent, data = server.request(method, path, body, headers)
    assert status == 421, data
    assert "does not answer to the host name" in json.loads(data)["detail"]
    assert sent["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}",
                                  "studio.example:{port}"])  # fmt: skip
def test_the_names_the_server_was_started_for_are_answered(server: Server, host: str) -> None:
    status, _, data = server.request("GET", "/api/info", headers={"Host": host.format(port=server.port)})
    assert status == 200, data


def test_another_jobs_result_cannot_be_read_through_a_rebound_name(server: Server) -> None:
    job = server.job({**SAMPLES, "size": 48, "steps": 2})
    server.wait(job["id"], ("done",))
    assert server.request("GET", f"/api/jobs/{job['id']}/result.png")[0] == 200
    status, _, _ = server.request("GET", f"/api/jobs/{job['id']}/result.png", headers={"Host": "evil.com"})
    assert status == 421


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.com", "Content-Type": "application/json"},
        {"Origin": "http://evil.com", "Content-Type": "text/plain"},
        {"Origin": "null", "Content-Type": "application/json"},
        {"Origin": "http://127.0.0.1:1", "Content-Type": "application/json"},  # another port is another origin
        {"Referer": "http://evil.com/page.html", "Content-Type": "application/json"},
        {"Origin": "http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
    ],
)
def test_cross_site_job_submissions_are_refused_and_start_nothing(server: Server, headers: dict[str, str]) -> None:
    before = set(server.jobs())
    sent = {k: v.format(port=server.port) for k, v in headers.items()}
    status, _, data = server.request("POST", "/api/jobs", json.dumps({**SAMPLES, "steps": 1}).encode(), sent)
    assert status == 403, data
    assert set(server.jobs()) == before


def test_a_simple_text_plain_request_from_the_page_itself_is_refused_too(server: Server) -> None:
    headers = {"Origin": server.origin, "Content-Type": "text/plain"}
    status, _, data = server.request("POST", "/api/jobs", json.dumps({**SAMPLES, "steps": 1}).encode(), headers)
    assert status == 415 and "application/json" in json.loads(data)["detail"]


def _multipart(data: bytes, name: str = "photo.png") -> tuple[bytes, str]:
    boundary = "nst-boundary-7d1f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_cross_origin_upload_is_refused_and_not_stored(server: Server, shared_images: Path) -> None:
    def stored() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("nst-engine-serve-*/uploads/*"))

    before = stored()
    body, kind = _multipart((shared_images / "content_turtle.jpg").read_bytes())
    for sender in ({"Origin": "http://evil.com"}, {"Referer": "http://evil.com/x"}):
        status, _, _ = server.request("POST", "/api/uploads", body, {"Content-Type": kind, **sender})
        assert status == 403
    assert stored() == before
    status, _, data = server.request("POST", "/api/uploads", body, {"Content-Type": kind, "Origin": server.origin})
    assert status == 200 and len(stored()) == len(before) + 1, data  # the page's own upload is taken


def test_every_response_carries_the_security_headers(server: Server) -> None:
    for path in ("/", "/api/info", "/static/app.js", "/api/jobs/0123456789ab/result.png"):
        _, sent, _ = server.request("GET", path)
        assert sent["x-content-type-options"] == "nosniff", path
        csp = sent["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "img-src 'self' data: blob:" in csp
        assert sent["x-frame-options"] == "DENY"
    status, _, _ = server.request("GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert status == 200  # a link from another site may open the page...
    status, _, _ = server.request("GET", "/api/info", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403  # ...but not read or embed anything


def test_deeply_nested_json_is_400_not_a_server_error(server: Server) -> None:
    headers = {"Origin": server.origin, "Content-Type": "application/json"}
    for body in (b"[" * 60_000, b'{"content": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"):
        status, _, data = server.request("POST", "/api/jobs", body, headers)
        assert status == 400, data
        assert "nests deeper" in json.loads(data)["detail"]
    status, _, _ = server.request("POST", "/api/jobs", b"[" * 100_000, headers)
    assert status == 413  # over the JSON size limit: said as a size


def test_a_chunked_upload_over_the_limit_is_413(server: Server) -> None:
    body, kind = _multipart(b"\x89PNG" + b"\0" * (3 << 20))
    headers = {"Content-Type": kind, "Origin": server.origin}
    status, _, data = server.request("POST", "/api/uploads", body, headers, chunked=True)
    assert status == 413, data
    status, _, _ = server.request("POST", "/api/uploads", body, headers)  # declared in Content-Length
    assert status == 413


def test_stop_acts_on_the_job_named_and_the_history_stays_bounded(server: Server) -> None:
    running = server.job({**SAMPLES, "size": 48, "steps": 2000})
    server.wait(running["id"], ("running",))
    queued = server.job({**SAMPLES, "size": 48, "steps": 2000})
    assert server.stop(queued["id"])["state"] == "cancelled"
    assert server.jobs()[running["id"]]["state"] == "running"  # the running job goes on
    assert server.stop(running["id"])["state"] == "running"  # asked: it stops after its step
    assert server.wait(running["id"], ("stopped",))["has_result"]
    # Many submit-and-stop cycles: the server keeps only the last 3 finished jobs (--max-history 3).
    for _ in range(6):
        job = server.job({**SAMPLES, "size": 48, "steps": 2000})
        server.stop(job["id"])
        server.wait(job["id"], ("stopped", "cancelled"))
    jobs = server.jobs()
    assert len(jobs) <= 3, jobs
    assert server.request("GET", f"/api/jobs/{running['id']}/result.png")[0] == 404  # dropped with its files
    # A finished job can be deleted; a running one cannot.
    last = list(jobs)[-1]
    status, _, _ = server.request("DELETE", f"/api/jobs/{last}", headers={"Origin": server.origin})
    assert status == 200 and last not in server.jobs()
    status, _, _ = server.request("DELETE", f"/api/jobs/{next(iter(jobs))}", headers={"Origin": "http://evil.com"})
    assert status == 403
