"""The optimisers, one entry each: how to build one, its default learning rate, and what it costs in memory.

A new optimiser is one class beside ``lbfgs.py`` and ``adam.py`` and one entry here (its name also goes into
``config.Optimizer``, which a test keeps equal to this registry). The memory estimate and the tiled objective ask
the entry, never the name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from nst_engine.errors import ConfigError
from nst_engine.optim.adam import Adam
from nst_engine.optim.lbfgs import DEFAULT_MAX_STEP, LBFGS
from nst_engine.optim.step import Optimizer


@dataclass(frozen=True)
class Tuning:
    """Knobs for experiments (``nst_engine.bench.tune``), not options: the defaults are the engine's choices
    (docs/design.md). Passed down explicitly; nothing changes a module's globals."""

    backtrack: bool = True  # L-BFGS retries from the last accepted point, shorter, after a step that raised the loss
    gamma: Literal["short", "geometric"] = "short"  # L-BFGS's initial inverse-Hessian scale: y.s/y.y or |s|/|y|
    handoff_smoothing: int = 8  # coarse to fine: the change a coarse scale made is smoothed to 1/N of its size


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    default_lr: float
    build: Callable[[torch.Tensor, float, int, Tuning], Optimizer]  # (pixels, lr, history, tuning)
    #: Image-sized float32 buffers its state keeps, given the L-BFGS history (for the memory estimate).
    image_buffers: Callable[[int], int]
    #: Whether its step needs only the loss and the whole gradient, which the tiled objective gives exactly.
    tiles_exactly: bool = True


def _lbfgs(param: torch.Tensor, lr: float, history: int, tuning: Tuning) -> Optimizer:
    return LBFGS(param.detach(), history=history, max_step=DEFAULT_MAX_STEP * lr, bounds=(0.0, 1.0),
                 backtrack=tuning.backtrack, gamma=tuning.gamma)  # fmt: skip


def _adam(param: torch.Tensor, lr: float, history: int, tuning: Tuning) -> Optimizer:
    return Adam(param, lr)


OPTIMIZERS: dict[str, OptimizerEntry] = {
    # L-BFGS: the (s, y) ring of ``history`` pairs, plus the previous point and gradient and the direction.
    "lbfgs": OptimizerEntry("lbfgs", 1.0, _lbfgs, lambda history: 2 * history + 8),
    # Adam: its two moments and a copy of the last good point, plus the gradient and work buffers.
    "adam": OptimizerEntry("adam", 0.02, _adam, lambda _history: 11),
}


def entry(name: str) -> OptimizerEntry:
    """The registry's entry for ``name``; an unknown name is an error with a did-you-mean, never a fallback."""
    found = OPTIMIZERS.get(name)
    if found is None:
        close = difflib.get_close_matches(name, OPTIMIZERS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown optimizer '{name}'; {hint}choose one of {', '.join(OPTIMIZERS)}")
    return found


def make_optimizer(name: str, param: torch.Tensor, lr: float, history: int, tuning: Tuning | None = None) -> Optimizer:
    """The optimiser ``name`` over ``param`` (1, 3, H, W) pixels in [0, 1]."""
    return entry(name).build(param, lr, history, tuning or Tuning())
