"""The optimisation loop: an image tensor in, an image tensor out.

It knows nothing of files or terminals: after every step it hands a ``Step`` event to a callback, which
draws progress bars, writes traces or saves intermediate images. Ctrl-C ends it cleanly with the current
image; a non-finite loss or image rolls back to the last good image and retries at half the learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import NumericalError

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
    event: str = ""  # "recovered: ..." when the step rolled back


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


def _make_optimizer(name: str, param: torch.Tensor, lr: float, history: int) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam([param], lr=lr)
    # One L-BFGS iteration per step() call, so every step is one forward/backward and one event.
    # Tolerances off: a short run should never end early because the loss has a small scale.
    return torch.optim.LBFGS([param], lr=lr, max_iter=1, history_size=history, tolerance_grad=0.0, tolerance_change=0.0)


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
    optimiser's curvature history and makes it diverge; its image is clamped when it is read out, as in
    jcjohnson/neural-style. ``init`` is not modified. ``optimizer_state`` and
    ``first_step`` continue a run from a checkpoint. ``should_stop`` is polled between steps: when it says
    True the loop ends as interrupted, with a consistent optimiser state to checkpoint.
    """
    param = init.detach().clone().requires_grad_(True)
    state = dict(optimizer_state or {})
    scale = float(state.pop("loss_scale", 0.0)) or _loss_scale(objective, compose, param)
    rate = lr
    opt = _make_optimizer(optimizer, param, rate, history)
    if state:
        opt.load_state_dict(state)
    good = param.detach().clone()
    terms: dict[str, torch.Tensor] = {}
    losses: dict[str, float] = {}
    recoveries, done, start = 0, first_step - 1, time.perf_counter()

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        out = objective(compose(param))
        (out["total"] * scale).backward()
        terms.clear()
        terms.update(out)
        return out["total"]

    try:
        for step in range(first_step, steps + 1):
            if should_stop is not None and should_stop():
                return OptimizeResult(
                    compose(param.detach()).detach().clamp(0, 1), done, True, recoveries, losses, _saved(opt, scale)
                )
            before = param.detach().clone()
            opt.step(closure)  # type: ignore[arg-type]  # torch's stub says float; LBFGS takes a tensor
            values = torch.stack([t.detach().float() for t in terms.values()]).tolist()
            losses = dict(zip(terms.keys(), values, strict=True))
            event = ""
            if not all(math.isfinite(v) for v in values):
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise NumericalError(
                        f"the loss stayed non-finite after {MAX_RECOVERIES} rollbacks at step {step}; "
                        "lower --style-weight or --lr, or use --precision fp32",
                        image=compose(good).detach(),
                        step=step,
                    )
                rate /= 2
                with torch.no_grad():
                    param.copy_(good)
                opt = _make_optimizer(optimizer, param, rate, history)
                scale = _loss_scale(objective, compose, param)
                event = f"recovered: non-finite loss, rolled back and halved the learning rate to {rate:g}"
            else:
                good = before
                if optimizer == "adam":
                    with torch.no_grad():
                        param.clamp_(0.0, 1.0)
            done = step
            if callback is not None:
                size = (int(param.shape[-2]), int(param.shape[-1]))
                event_step = Step(step, steps, losses, time.perf_counter() - start, size=size, event=event)
                callback(event_step, lambda: compose(param.detach()).clamp(0.0, 1.0))
    except KeyboardInterrupt:
        image = param.detach() if torch.isfinite(param).all() else good
        return OptimizeResult(compose(image).detach().clamp(0, 1), done, True, recoveries, losses, _saved(opt, scale))
    return OptimizeResult(
        compose(param.detach()).detach().clamp(0, 1), done, False, recoveries, losses, _saved(opt, scale)
    )


def _saved(opt: torch.optim.Optimizer, scale: float) -> dict[str, Any]:
    return {**opt.state_dict(), "loss_scale": scale}


def _loss_scale(objective: Objective, compose: Compose, param: torch.Tensor) -> float:
    """A constant that brings the mean absolute gradient per pixel to 1 at the starting image.

    torch's L-BFGS keeps a curvature pair only when y.s > 1e-10, an absolute threshold. With losses of small
    magnitude (and at large sizes, where each pixel's gradient is small) it keeps none for dozens of steps,
    crawls along the raw gradient, then overshoots. Scaling the loss fixes that for any loss scale; Adam is
    indifferent to it. Reported losses are never scaled.
    """
    image = param.detach().clone().requires_grad_(True)
    total = objective(compose(image))["total"]
    (grad,) = torch.autograd.grad(total, image)
    mean_abs = float(grad.abs().mean())
    return 1.0 / mean_abs if math.isfinite(mean_abs) and mean_abs > 0 else 1.0
