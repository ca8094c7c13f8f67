"""The style losses by name: what ``--style-loss`` accepts, each with its help and the class that computes it.

Light on purpose (no torch): the settings list the names and the CLI shows the help without loading anything.
A new style loss is a file beside this one and one entry here.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from nst_engine.errors import ConfigError, did_you_mean


class Entry(NamedTuple):
    help: str  # one line for --help
    path: str  # "module:class" of its ``StyleLoss``
    #: --style-weight is multiplied by this, so that one style weight balances alike whatever the loss (the losses
    #: differ in size by orders of magnitude); measured in bench/reports/cpu-2core-losses.
    relative_weight: float = 1.0


STYLE_LOSSES: dict[str, Entry] = {
    "gram": Entry("Gram matrices (Gatys et al. 2016)", "nst_engine.losses.gram:GramLoss"),
    "wasserstein": Entry(
        "W2 between Gaussians: mean and covariance", "nst_engine.losses.wasserstein:WassersteinLoss", 2 / 3e6
    ),
    "sliced": Entry("sliced Wasserstein: whole feature distributions", "nst_engine.losses.sliced:SlicedLoss", 1 / 1e6),
}


def check_style_loss(name: str) -> str:
    """``name`` if it is a style loss, else a ConfigError naming the choices (with a did-you-mean)."""
    if name not in STYLE_LOSSES:
        hint = did_you_mean(name, STYLE_LOSSES)
        raise ConfigError(f"unknown --style-loss '{name}';{hint} choose one of {', '.join(STYLE_LOSSES)}")
    return name


def style_loss_class(name: str) -> Any:
    """The ``engine.losses.terms.StyleLoss`` subclass that computes style loss ``name``. Imported by its path, so
    that this module (which the settings import) never imports the loss modules (which import the settings)."""
    module, _, attr = STYLE_LOSSES[check_style_loss(name)].path.partition(":")
    return getattr(importlib.import_module(module), attr)
