"""Stop a run cleanly on Ctrl-C or SIGTERM: the first signal asks the session to stop between steps (so the
image and a consistent checkpoint can be saved); a second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def graceful_stop(request_stop: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM call ``request_stop`` with the signal's name."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    seen: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen and signum == signal.SIGINT:
            raise KeyboardInterrupt
        seen.append(signal.Signals(signum).name)
        request_stop(seen[0])

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
