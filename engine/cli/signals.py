"""Stop a run cleanly on Ctrl-C, SIGTERM or SIGHUP: the first signal asks the session to stop between steps (so the
image and a consistent checkpoint can be saved); a second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: Ctrl-C, a polite kill, and the terminal closing: each stops a run with its image and checkpoint saved.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_signals() -> None:
    """Outside a run, SIGTERM and SIGHUP interrupt like Ctrl-C, so that clean-up (temporary files) still runs."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: the clean-up this interrupt starts (temporary files) must not be interrupted by a repeat of it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def graceful_stop(request_stop: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP call ``request_stop`` with the signal's name."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    seen: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen and signum == signal.SIGINT:
            raise KeyboardInterrupt
        seen.append(signal.Signals(signum).name)
        request_stop(seen[0])

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
