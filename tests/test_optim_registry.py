"""The optimiser registry: every optimiser the settings name has one entry, an unknown name is an error with a
did-you-mean (never a silent L-BFGS), and the tuning knobs reach the optimiser as parameters."""

from __future__ import annotations

import typing

import pytest
import torch

from nst_engine.config import DEFAULT_LR, Optimizer, StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.memory import estimate_bytes
from nst_engine.optim.adam import Adam
from nst_engine.optim.lbfgs import LBFGS
from nst_engine.optim.registry import OPTIMIZERS, Tuning, entry, make_optimizer


def test_the_settings_and_the_registry_name_the_same_optimisers() -> None:
    assert set(typing.get_args(Optimizer)) == set(OPTIMIZERS)
    assert {name: e.default_lr for name, e in OPTIMIZERS.items()} == DEFAULT_LR


@pytest.mark.parametrize(("name", "hint"), [("lbgfs", "did you mean 'lbfgs'?"), ("adma", "did you mean 'adam'?"),
                                            ("sgd", "choose one of lbfgs, adam")])  # fmt: skip
def test_an_unknown_optimiser_is_an_error_with_a_did_you_mean(name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown optimizer '{name}'; .*{hint}"):
        make_optimizer(name, torch.zeros(1, 3, 4, 4), 1.0, 3)


def test_each_entry_builds_its_optimiser_with_the_tuning_given() -> None:
    pixels = torch.rand(1, 3, 4, 4)
    assert isinstance(make_optimizer("adam", pixels, 0.02, 3), Adam)
    lbfgs = make_optimizer("lbfgs", pixels, 1.0, 3, Tuning(backtrack=False, gamma="geometric"))
    assert isinstance(lbfgs, LBFGS) and lbfgs.backtrack is False and lbfgs.gamma_kind == "geometric"
    assert make_optimizer("lbfgs", pixels, 1.0, 3).backtrack is True  # type: ignore[attr-defined]


def test_the_memory_estimate_asks_the_entry() -> None:
    lbfgs, adam = StyleConfig(size=256, lbfgs_history=30), StyleConfig(size=256, optimizer="adam")
    extra = estimate_bytes(256, 256, lbfgs, "cpu") - estimate_bytes(256, 256, adam, "cpu")
    per_buffer = 3 * 256 * 256 * 4
    assert extra == per_buffer * (entry("lbfgs").image_buffers(30) - entry("adam").image_buffers(30))
