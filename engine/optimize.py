"""The optimisation loop: an image tensor in, an image tensor out.

It knows nothing of files or terminals: after every step it hands a ``Step`` event to a callback, which
draws progress bars, writes traces or saves intermediate images. A stop request (Ctrl-C, SIGTERM) ends it
between steps with a consistent state to checkpoint; a non-finite loss rolls back to the last good image
and retries at half the learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import NumericalError
from engine.lbfgs import DEFAULT_MAX_STEP, LBFGS

Objective = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
Compose = Callable[[torch.Tensor], torch.Tensor]
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
    #: The raw variable being optimised (unclamped, before compose): what a checkpoint must hold.
    pixels: torch.Tensor | None = None


class _Adam:
    """torch's Adam behind the same step() call as our L-BFGS; pixels are clamped to [0, 1] after each step."""

    def __init__(self, param: torch.Tensor, lr: float) -> None:
        self.opt = torch.optim.Adam([param], lr=lr)

    def step(self, x: torch.Tensor, loss: float, grad: torch.Tensor) -> bool:
        self.opt.step()
        x.clamp_(0.0, 1.0)
        return True

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)


def _make_optimizer(name: str, param: torch.Tensor, lr: float, history: int) -> _Adam | LBFGS:
    if name == "adam":
        return _Adam(param, lr)
    return LBFGS(param.detach(), history=history, max_step=DEFAULT_MAX_STEP * lr)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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
) -> OptimizeResult:
    """Minimise ``objective(compose(x))["total"]`` over pixels x, starting from ``init`` (1, 3, H, W) in [0, 1].

    Adam's pixels are clamped to [0, 1] after each step. L-BFGS's are not: clamping moves the point under the
    optimiser's curvature history; its image is clamped when read out, as in jcjohnson/neural-style.
    For L-BFGS, ``lr`` scales the trust region (the largest pixel change per step). ``init`` is not modified.
    ``optimizer_state`` and ``first_step`` continue a checkpoint. ``should_stop`` is polled between steps.
    """
    param = init.detach().clone().requires_grad_(True)
    rate = lr
    opt = _make_optimizer(optimizer, param, rate, history)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    good = param.detach().clone()
    losses: dict[str, float] = {}
    recoveries, done, start = 0, first_step - 1, time.perf_counter()

    def finish(interrupted: bool, image: torch.Tensor) -> OptimizeResult:
        out = compose(image.detach()).detach().clamp(0, 1)
        return OptimizeResult(out, done, interrupted, recoveries, losses, opt.state_dict(), image.detach().clone())

    try:
        for step in range(first_step, steps + 1):
            if should_stop is not None and should_stop():
                return finish(True, param)
            param.grad = None
            terms = objective(compose(param))
            terms["total"].backward()
            assert param.grad is not None
            values = torch.stack([t.detach().float() for t in terms.values()]).tolist()  # one host sync
            losses = dict(zip(terms.keys(), values, strict=True))
            event = ""
            if not all(math.isfinite(v) for v in values) or not bool(torch.isfinite(param.grad).all()):
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise NumericalError(
                        f"the loss stayed non-finite after {MAX_RECOVERIES} rollbacks at step {step}; "
                        "lower --style-weight or --lr, or use --precision fp32",
                        image=compose(good).detach().clamp(0, 1),
                        step=step,
                    )
                rate /= 2
                with torch.no_grad():
                    param.copy_(good)
                opt = _make_optimizer(optimizer, param, rate, history)
                event = f"recovered: non-finite loss, rolled back and halved the learning rate to {rate:g}"
            else:
                good = param.detach().clone()
                with torch.no_grad():
                    if not opt.step(param, losses["total"], param.grad):
                        event = "undone: the loss blew up; step undone and trust region halved"
            done = step
            if callback is not None:
                size = (int(param.shape[-2]), int(param.shape[-1]))
                event_step = Step(step, steps, losses, time.perf_counter() - start, size=size, event=event)
                callback(event_step, lambda: compose(param.detach()).clamp(0.0, 1.0))
    except KeyboardInterrupt:
        return finish(True, param.detach() if bool(torch.isfinite(param).all()) else good)
    return finish(False, param)
