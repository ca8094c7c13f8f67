"""One optimisation step as device work, and the contracts the loop relies on.

``EagerStep`` runs a step op by op; ``engine.optim.graphs.CudaGraphStep`` replays a captured one. Both are a
``StepRunner``: the loop calls them and asks each for a note on what happened to it (a capture, a fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

Objective = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
Compose = Callable[[torch.Tensor], torch.Tensor]


class Optimizer(Protocol):
    """The contract of ``LBFGS`` and ``Adam``: ``step`` updates x in place from the loss and gradient at x and
    returns an outcome code tensor; nothing in it waits on the host."""

    def step(self, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor: ...
    def last_good(self) -> torch.Tensor: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EagerStep:
    """One whole optimisation step as device work: loss terms, gradient to the pixels, optimiser update.

    Returns the loss terms stacked in one tensor and the outcome code, both left on the device: calling it
    never waits on the host, so a CUDA host can queue many steps ahead, or capture one in a graph.
    """

    def __init__(self, objective: Objective, compose: Compose, param: torch.Tensor, opt: Optimizer) -> None:
        self.objective, self.compose, self.param, self.opt = objective, compose, param, opt
        self.names: tuple[str, ...] = ()

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        terms = self.objective(self.compose(self.param))
        self.names = tuple(terms)
        total = terms["total"]
        (grad,) = torch.autograd.grad(total, self.param)
        values = torch.stack([t.detach().float() for t in terms.values()])
        with torch.no_grad():
            code = self.opt.step(self.param, total.detach(), grad)
        return values, code

    def take_note(self) -> str:
        return ""

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step reads and writes: the pixels first, then the optimiser's state."""
        return [self.param, *self.opt.state_dict().values()]


class StepRunner(Protocol):
    """What the loop calls once per step: the loss terms stacked and the outcome code, both on the device."""

    @property
    def names(self) -> tuple[str, ...]:
        """The loss terms' names, in the order of the stacked values (known after the first call)."""
        ...

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def take_note(self) -> str:
        """Something worth telling the user about this runner since the last call ("" if nothing)."""
        ...
