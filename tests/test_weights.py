"""Weight sources: random, local files, and the real download path against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nst_engine.errors import WeightsError
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import download, env_name, random_weights, resolve

URL_ENV = env_name("vgg19")


def download_vgg19():  # type: ignore[no-untyped-def]
    return download("vgg19")


def test_random_weights_are_seeded_and_labelled() -> None:
    a, b, c = random_weights(0), random_weights(0), random_weights(1)
    assert a.sha256 == b.sha256 != c.sha256
    assert not a.pretrained and "not pretrained" in a.label
    assert resolve("random").sha256 == a.sha256 and resolve("random:1").sha256 == c.sha256
    with pytest.raises(WeightsError, match="random:SEED"):
        resolve("random:abc")


def _save_torchvision_file(path: Path, state: dict[str, torch.Tensor], classifier: bool = True) -> None:
    full = dict(state)
    if classifier:
        full["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(full, path)


def test_random_weights_do_not_depend_on_the_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        digests = set()
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            digests.add(random_weights(0).sha256)
    finally:
        torch.set_num_threads(threads)
    assert len(digests) == 1 and torch.get_num_threads() == threads


def test_local_file_loads_and_ignores_classifier(tmp_path: Path) -> None:
    source = random_weights(3)
    path = tmp_path / "vgg19.pth"
    _save_torchvision_file(path, source.state)
    loaded = resolve(str(path))
    assert loaded.pretrained and loaded.source == str(path)
    net = VGGFeatures(["relu5_1"])
    net.load_features(loaded.state)
    torch.testing.assert_close(net.features[0].weight, source.state["features.0.weight"])


def test_wrong_keys_shapes_and_junk_are_clear_errors(tmp_path: Path) -> None:
    state = dict(random_weights(0).state)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "features.28.weight"}, missing)
    with pytest.raises(WeightsError, match=r"no 'features\.28\.weight'"):
        resolve(str(missing))
    wrong = tmp_path / "wrong.pth"
    torch.save({**state, "features.0.weight": torch.zeros(64, 3, 5, 5)}, wrong)
    with pytest.raises(WeightsError, match=r"shape \(64, 3, 5, 5\).*needs \(64, 3, 3, 3\)"):
        resolve(str(wrong))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        resolve(str(junk))
    with pytest.raises(WeightsError, match="not found"):
        resolve(str(tmp_path / "nope.pth"))


def test_pickled_code_is_not_run(tmp_path: Path) -> None:
    """weights_only=True: a file whose pickle would run code is refused, and the code never runs."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Evil()}, path)
    with pytest.raises(WeightsError):
        resolve(str(path))
    assert not marker.exists()


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def served_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, str, bytes]]:
    """A torchvision-format file generated here, served as vgg19-HASH.pth from 127.0.0.1."""
    blob_path = tmp_path / "blob.pth"
    _save_torchvision_file(blob_path, random_weights(5).state)
    blob = blob_path.read_bytes()
    name = f"vgg19-{hashlib.sha256(blob).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with _Server({name: blob}) as server:
        monkeypatch.setenv(URL_ENV, f"{server.url}/{name}")
        yield server, name, blob


def test_download_then_cache_then_corruption(served_weights: tuple[_Server, str, bytes], tmp_path: Path) -> None:
    server, name, blob = served_weights
    first = download_vgg19()
    assert first.pretrained and server.hits == [f"/{name}"]
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / name
    assert cached.read_bytes() == blob
    second = download_vgg19()
    assert len(server.hits) == 1, "the second run must reuse the hub cache"
    assert second.sha256 == first.sha256
    # A cached file damaged after download is noticed and fetched again.
    cached.write_bytes(blob[:-10] + b"0123456789")
    third = download_vgg19()
    assert len(server.hits) == 2 and third.sha256 == first.sha256


def test_download_with_wrong_hash_is_rejected(
    served_weights: tuple[_Server, str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _, blob = served_weights
    bad_name = "vgg19-00000000.pth"
    server.files[bad_name] = blob
    monkeypatch.setenv(URL_ENV, f"{server.url}/{bad_name}")
    with pytest.raises(WeightsError, match="sha256 check"):
        download_vgg19()
    assert not (tmp_path / "torch-home" / "hub" / "checkpoints" / bad_name).exists()


def test_offline_error_says_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9/vgg19-dcbb9e9d.pth")  # port 9 (discard): refused
    with pytest.raises(WeightsError) as info:
        download_vgg19()
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and str(tmp_path / "th") in message and "--weights" in message
    assert "\n" not in message


def test_a_server_that_never_answers_times_out_with_a_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listening socket on 127.0.0.1 that accepts connections and never sends a byte."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{listener.getsockname()[1]}/vgg19-0123abcd.pth")
    monkeypatch.setenv("NST_ENGINE_DOWNLOAD_TIMEOUT", "0.5")
    start = time.monotonic()
    try:
        with pytest.raises(WeightsError, match=r"cannot download vgg19 weights .*one deadline of 0.5 s for connecting"):
            download_vgg19()
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
    assert time.monotonic() - start < 5 and len(held) == 1  # one deadline for everything: no retry after it
