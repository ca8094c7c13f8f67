"""The --cluster and --workers values, and starting Ray here or joining a running cluster."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

from nst_engine.errors import ConfigError

#: How long joining a running cluster may take (connecting included) before the run fails in one line.
JOIN_SECONDS = 30.0
#: The most workers a run starts, whatever is asked (each is a process holding a network).
MAX_WORKERS = 256
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")


def parse_cluster(value: str) -> str | None:
    """``ray`` (start Ray here) or ``ray:HOST:PORT`` (join a running cluster): the address, or None."""
    if value == "ray":
        return None
    address = value[4:] if value.startswith("ray:") else ""
    host, _, port = address.rpartition(":")
    if not (_HOST.match(host) and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--cluster must be ray or ray:HOST:PORT (e.g. ray:127.0.0.1:6379), not '{value[:80]}'")
    return address


def check_workers(workers: int | None) -> None:
    """--workers, for stylize and video alike: unset (one per CPU), or 1 to MAX_WORKERS."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}; leave it out for one per CPU")


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster ray needs Ray: pip install 'nst-engine[cluster]'") from None
    return ray


def connect(ray: Any, address: str | None, requested: int | None, say: Callable[[str], None]) -> tuple[int, int]:
    """Start Ray here (``address`` None) or join the cluster at ``address``; (actors to start, CPUs each)."""
    if not ray.is_initialized():
        if address is None:
            cpus = os.cpu_count() or 1
            if requested is not None and requested > cpus:
                say(f"ray: {requested} workers asked for, but this machine has {cpus} CPUs: {cpus} start")
            # A cluster of this machine, its node on the loopback address, told the CPUs it has (never more: Ray
            # would start a process per CPU it is told of). Ray's servers still listen on every interface; the
            # token authentication Ray turns on for a local cluster guards them.
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")  # fmt: skip
        else:
            join(ray, address, say)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = max(1, min(requested or cpus, cpus))
    return count, max(1, cpus // count)


def join(ray: Any, address: str, say: Callable[[str], None]) -> None:
    """Join the cluster at ``address`` within JOIN_SECONDS, or a one-line error: a closed port is found by a plain
    connection first; a port that answers but is not Ray would leave ray.init waiting for ever."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with 'ray start --head "
            f"--port {port}', or check the address"
        ) from None
    if host in ("127.0.0.1", "localhost", "::1"):
        # Ray dials a loopback address by this machine's own IP: said, so that a firewall on it is findable.
        say(f"ray: Ray dials {address} as {ray.util.get_node_ip_address()}:{port}")
    joined: dict[str, BaseException | None] = {}

    def attempt() -> None:
        try:
            ray.init(address=address, log_to_driver=False)
            joined["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            joined["error"] = exc

    worker = threading.Thread(target=attempt, name="nst-engine-ray-join", daemon=True)
    worker.start()
    worker.join(JOIN_SECONDS)
    if "error" not in joined:
        raise ConfigError(
            f"no Ray cluster answered at {address} within {JOIN_SECONDS:g} s (the port is open, but not to Ray's "
            "head?); check the address, and that 'ray status' works there"
        )
    error = joined["error"]
    if isinstance(error, (ConnectionError, ray.exceptions.AuthenticationError)):
        why = str(error).splitlines()[0][:160]
        raise ConfigError(
            f"cannot join the Ray cluster at {address} ({why}); start it with 'ray start --head' "
            "and give this machine the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN=...)"
        ) from None
    if error is not None:
        raise error
