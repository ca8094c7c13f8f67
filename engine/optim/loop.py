"""The optimisation loop: an image tensor in, an image tensor out.

It knows nothing of files or terminals: for every step it hands a ``Step`` event to a callback, which
draws progress bars, writes traces or saves intermediate images. A step is device work only (no host sync):
events are read back in batches on CUDA. A stop request (Ctrl-C, SIGTERM) ends it between steps with a
consistent state to checkpoint; a non-finite loss rolls back to the last good image with a halved step size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nst_engine.errors import NumericalError
from nst_engine.optim.graphs import CudaGraphStep
from nst_engine.optim.lbfgs import NON_FINITE, UNDONE
from nst_engine.optim.registry import Tuning, make_optimizer
from nst_engine.optim.step import Compose, EagerStep, Objective, StepRunner

#: Rollbacks allowed before the loop gives up on a non-finite loss.
MAX_RECOVERIES = 4


@dataclass(frozen=True)
class Step:
    """One finished optimisation step. ``losses`` are the terms at the image the step started from."""

    step: int  # 1-based, counted within the current scale
    steps: int
    losses: dict[str, float]
    elapsed_s: float  # since the start of this optimisation
    scale: int = 0
    scales: int = 1
    size: tuple[int, int] = (0, 0)
    event: str = ""  # "recovered: ..." or "undone: ..." when the step went back


#: Receives each Step and a function returning the current image (1, 3, H, W) in [0, 1], computed only if called.
Callback = Callable[[Step, Callable[[], torch.Tensor]], None]


@dataclass
class OptimizeResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    steps_done: int
    interrupted: bool = False
    recoveries: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    #: The raw variable being optimised (before compose): what a checkpoint must hold.
    pixels: torch.Tensor | None = None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: Outcome codes (engine.optim.lbfgs) as the text of a Step's event.
EVENTS = {
    UNDONE: "undone: the loss blew up; step undone and trust region halved",
    NON_FINITE: "recovered: non-finite loss or gradient; rolled back to the last good image and halved the step size",
}


class _Reporter:
    """Holds the device results of queued steps and turns them into Step events, reading them all back in one
    host sync. On CPU it flushes every step; on CUDA every ``sync_every`` steps, so the GPU never idles while
    the host waits for a loss it only wants for a progress bar."""

    def __init__(self, runner: StepRunner, steps: int, callback: Callback | None, image: Callable[[], Any]):
        self.runner, self.steps, self.callback, self.image = runner, steps, callback, image
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.start = self.last_flush = time.perf_counter()
        self.losses: dict[str, float] = {}
        self.recoveries = 0

    def add(self, step: int, values: torch.Tensor, code: torch.Tensor) -> None:
        self.pending.append((step, values, code))

    def flush(self, size: tuple[int, int], names: tuple[str, ...], last_good: Callable[[], torch.Tensor]) -> None:
        if not self.pending:
            return
        rows = [torch.cat([v, c.to(v.dtype).view(1)]) for _, v, c in self.pending]
        table = torch.stack(rows).tolist()  # the one host sync per flush: losses, then the outcome code
        values, codes = [r[:-1] for r in table], [int(r[-1]) for r in table]
        now = time.perf_counter()
        span = (now - self.last_flush) / len(self.pending)  # queued steps took the same time each: spread it
        base = self.last_flush - self.start
        batch, self.pending, self.last_flush = self.pending, [], now
        note = self.runner.take_note()
        for i, ((step, _, _), row, code) in enumerate(zip(batch, values, codes, strict=True)):
            self.losses = dict(zip(names, row, strict=True))
            event = EVENTS.get(code, "")
            if code == NON_FINITE:
                self.recoveries += 1
                if self.recoveries > MAX_RECOVERIES:
                    raise NumericalError(
                        f"the loss stayed non-finite after {MAX_RECOVERIES} rollbacks at step {step}; "
                        "lower --style-weight or --lr, or use --precision fp32",
                        image=last_good().detach().clamp(0, 1),
                        step=step,
                    )
            if note and i == 0:
                event = f"{event}; {note}" if event else note
            if self.callback is not None:
                elapsed = base + span * (i + 1)
                self.callback(Step(step, self.steps, self.losses, elapsed, size=size, event=event), self.image)


def optimize(
    objective: Objective,
    init: torch.Tensor,
    *,
    steps: int,
    optimizer: str = "lbfgs",
    lr: float = 1.0,
    history: int = 100,
    callback: Callback | None = None,
    compose: Compose = _identity,
    optimizer_state: dict[str, Any] | None = None,
    first_step: int = 1,
    should_stop: Callable[[], bool] | None = None,
    sync_every: int = 1,
    cuda_graph: str = "off",
    tuning: Tuning | None = None,
) -> OptimizeResult:
    """Minimise ``objective(compose(x))["total"]`` over pixels x, starting from ``init`` (1, 3, H, W) in [0, 1].

    Pixels stay in [0, 1], so every loss reported is the loss of the image that would be saved: Adam clamps
    after each step; L-BFGS holds pixels at a bound that the gradient pushes outward and projects each step into
    the box (engine.optim.lbfgs). Iterating freely and clamping at read-out, as jcjohnson/neural-style does, saves an
    image whose loss is higher than the one reported.
    For L-BFGS, ``lr`` scales the trust region (the largest pixel change per step). ``init`` is not modified.
    ``optimizer_state`` and ``first_step`` continue a checkpoint. ``should_stop`` is polled between steps.

    Steps never wait on the host; losses are read back (and ``callback`` called, in step order) every
    ``sync_every`` steps and at the end; the image ``callback`` can ask for is the one after the latest step
    queued. ``cuda_graph`` ("off", "auto" or "on", CUDA only) captures the whole step in a CUDA graph after a
    few eager steps; "auto" falls back to eager steps with the reason in the next event, "on" raises instead.
    A non-finite loss rolls back to the last good image (``MAX_RECOVERIES`` times at most).
    """
    param = init.detach().clone().requires_grad_(True)
    opt = make_optimizer(optimizer, param, lr, history, tuning)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    eager = EagerStep(objective, compose, param, opt)
    runner: StepRunner = eager if cuda_graph == "off" else CudaGraphStep(eager, required=cuda_graph == "on")
    size = (int(param.shape[-2]), int(param.shape[-1]))
    reporter = _Reporter(runner, steps, callback, lambda: compose(param.detach()).clamp(0.0, 1.0))

    def last_good() -> torch.Tensor:
        return compose(opt.last_good().view_as(param))

    def flush() -> None:
        reporter.flush(size, eager.names, last_good)

    def finish(interrupted: bool, image: torch.Tensor) -> OptimizeResult:
        out = compose(image.detach()).detach().clamp(0, 1)
        return OptimizeResult(
            out, done, interrupted, reporter.recoveries, reporter.losses, opt.state_dict(), image.detach().clone()
        )

    done = first_step - 1
    try:
        for step in range(first_step, steps + 1):
            if should_stop is not None and should_stop():
                flush()
                return finish(True, param)
            values, code = runner()
            done = step
            reporter.add(step, values, code)
            if len(reporter.pending) >= sync_every:
                flush()
        flush()
    except KeyboardInterrupt:
        ok = bool(torch.isfinite(param).all())
        return finish(True, param.detach() if ok else opt.last_good().view_as(param))
    return finish(False, param)
