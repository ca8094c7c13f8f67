"""The optimisation step as device work: no host syncs, state updated in place, batched read-back, CUDA graphs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from nst_engine.config import StyleConfig
from nst_engine.errors import ProviderError
from nst_engine.objective import Objective
from nst_engine.optim.lbfgs import LBFGS
from nst_engine.optim.loop import optimize
from nst_engine.optim.registry import make_optimizer
from nst_engine.optim.step import EagerStep
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets, StyleRegion, content_target, style_target
from tests.conftest import gradient_image, poisoned_quadratic

#: Tensor methods that copy a value to the host, so a CUDA host would wait for the GPU there.
HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu"}


class HostReads(TorchFunctionMode):
    """Records every tensor-to-host read made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_the_detector_sees_host_reads() -> None:
    x = torch.ones(3)
    with HostReads() as mode:
        if x.sum() > 0:
            float(x.mean())
    assert mode.reads == ["__bool__", "__float__"]


def _objective(model_info, config: StyleConfig, size: int = 32) -> tuple[Objective, torch.Tensor]:  # type: ignore[no-untyped-def]
    net = model_info.torch_module(config.layers)
    content, style = gradient_image(size, size, seed=1), gradient_image(size, size, seed=2)
    with torch.no_grad():
        targets = content_target(net, content, config.content_layers)
        style_t = style_target(net, style, config.style_layers)
    return Objective.of(net, targets, [StyleRegion(style_t)], config).accelerate(torch.device("cpu")), content


@pytest.mark.parametrize(
    ("optimizer", "settings"),
    [("lbfgs", {}), ("adam", {}), ("lbfgs", {"style_loss": "wasserstein", "normalize_gradients": True})],
)
def test_a_step_never_reads_back_to_the_host(model_info, optimizer: str, settings: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    config = StyleConfig(size=32, optimizer=optimizer, **settings)  # type: ignore[arg-type]
    objective, content = _objective(model_info, config)
    param = content.clone().requires_grad_(True)
    # On the CPU the L-BFGS ring is addressed from the host by default (free there); on CUDA with device indices.
    opt = (
        LBFGS(param.detach(), history=5, device_indexed=True, bounds=(0.0, 1.0))
        if optimizer == "lbfgs"
        else make_optimizer(optimizer, param, config.learning_rate, 5)
    )
    step = EagerStep(objective, lambda x: x, param, opt)
    step()  # the first call may set up caches (masks, covariance roots) once
    with HostReads() as mode:
        for _ in range(8):  # past the 5-pair ring: wrap-around included
            step()
    assert mode.reads == []


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_step_state_is_updated_in_place(model_info, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    """A CUDA graph replays reads and writes of the same memory: rebinding any state tensor would freeze it."""
    config = StyleConfig(size=32, optimizer=optimizer)  # type: ignore[arg-type]
    objective, content = _objective(model_info, config)
    param = content.clone().requires_grad_(True)
    step = EagerStep(objective, lambda x: x, param, make_optimizer(optimizer, param, config.learning_rate, 3))
    step()
    before = [(t.data_ptr(), t.clone()) for t in step.state()]
    for _ in range(4):
        step()
    after = step.state()
    assert [t.data_ptr() for t in after] == [p for p, _ in before]
    changed = [not torch.equal(t, old) for t, (_, old) in zip(after, before, strict=True)]
    assert changed[0] and sum(changed) >= 3  # pixels and optimiser state really move


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_batched_read_back_gives_the_same_run(model_info, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    config = StyleConfig(size=32, optimizer=optimizer)  # type: ignore[arg-type]
    runs = []
    for sync_every in (1, 4):
        objective, content = _objective(model_info, config)
        events: list[Any] = []
        result = optimize(
            objective,
            content,
            steps=10,
            optimizer=optimizer,
            lr=config.learning_rate,
            history=5,
            callback=lambda s, img, events=events: events.append(s),  # type: ignore[misc]
            sync_every=sync_every,
        )
        runs.append((result, events))
    (one, one_events), (four, four_events) = runs
    assert [e.step for e in four_events] == list(range(1, 11))
    assert [e.losses for e in four_events] == [e.losses for e in one_events]
    assert torch.equal(one.image, four.image) and four.steps_done == 10
    assert all(b.elapsed_s >= a.elapsed_s for a, b in itertools.pairwise(four_events))


def test_host_and_device_indexed_rings_take_the_same_steps(model_info) -> None:  # type: ignore[no-untyped-def]
    config = StyleConfig(size=32)
    objective, content = _objective(model_info, config)
    runs = []
    for device_indexed in (False, True):
        param = content.clone().requires_grad_(True)
        opt = LBFGS(param.detach(), history=4, device_indexed=device_indexed, bounds=(0.0, 1.0))
        step = EagerStep(objective, lambda x: x, param, opt)
        losses = [float(step()[0][-1]) for _ in range(9)]  # past the 4-pair ring: wrap-around included
        runs.append((losses, param.detach().clone(), int(opt.count)))
    (host_losses, host_x, host_count), (dev_losses, dev_x, dev_count) = runs
    assert host_count == dev_count > 4
    assert host_losses == dev_losses and host_losses[-1] < host_losses[0]
    assert torch.equal(host_x, dev_x)


def _textbook_direction(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """-H g by Nocedal and Wright's two-loop recursion (Algorithm 7.4), oldest pair first in ``pairs``, with the
    engine's default initial scale of the newest pair (their y.s / y.y)."""
    q, alphas = g.clone(), []
    for s, y in reversed(pairs):
        alphas.append((s @ q) / (y @ s))
        q = q - alphas[-1] * y
    s, y = pairs[-1]
    r = q * ((y @ s) / (y @ y))
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        r = r + s * (a - (y @ r) / (y @ s))
    return -r


@pytest.mark.parametrize("device_indexed", [False, True], ids=["host-ring", "device-ring"])
def test_lbfgs_direction_is_the_textbook_two_loop_recursion(device_indexed: bool) -> None:
    # A convex quadratic in float64: every pair is kept, so the ring must hold exactly the newest `history`.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    hessian = a @ a.T + 40 * torch.eye(40, dtype=torch.float64)
    x = torch.randn(40, generator=gen, dtype=torch.float64)
    history = 4
    opt = LBFGS(x, history=history, max_step=0.5, device_indexed=device_indexed)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    for _ in range(10):  # past the 4-pair ring: wrap-around included
        g = hessian @ x
        if previous is not None:
            pairs.append((x - previous[0], g - previous[1]))
        previous = (x.clone(), g)
        assert int(opt.step(x, 0.5 * x @ hessian @ x, g)) == 0
        if pairs:
            expected = _textbook_direction(g, pairs[-history:])
            torch.testing.assert_close(opt._direction(g), expected, rtol=1e-10, atol=1e-12)
    assert int(opt.count) == len(pairs) > history


def _box_quadratic() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A coupled convex quadratic whose unconstrained minimum lies partly outside [0, 1], and its minimum inside
    the box, found by projected gradient descent run to convergence."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(48, 48, generator=gen, dtype=torch.float64)
    hessian = a @ a.T / 48 + 0.1 * torch.eye(48, dtype=torch.float64)
    centre = torch.rand(48, generator=gen, dtype=torch.float64) * 2 - 0.5
    x, lipschitz = torch.full_like(centre, 0.5), torch.linalg.eigvalsh(hessian).max()
    for _ in range(20000):
        x = (x - hessian @ (x - centre) / lipschitz).clamp(0, 1)
    return hessian, centre, x


@pytest.mark.parametrize("device_indexed", [False, True], ids=["host-ring", "device-ring"])
def test_bounded_lbfgs_finds_the_minimum_inside_the_box(device_indexed: bool) -> None:
    hessian, centre, solution = _box_quadratic()
    assert float((centre.clamp(0, 1) - solution).abs().max()) > 0.1  # coupled: clamping the free minimum is wrong
    ends = {}
    for bounds in ((0.0, 1.0), None):
        x = torch.full_like(centre, 0.5)
        opt = LBFGS(x, history=5, max_step=0.1, device_indexed=device_indexed, bounds=bounds)
        for _ in range(150):
            opt.step(x, 0.5 * (x - centre) @ hessian @ (x - centre), hessian @ (x - centre))
            if bounds is not None:
                assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # every point it visits is a valid image
        ends[bounds] = x
    torch.testing.assert_close(ends[(0.0, 1.0)], solution, rtol=0, atol=1e-8)
    # Iterating freely and clamping at the end, as jcjohnson/neural-style does, lands elsewhere.
    assert float((ends[None].clamp(0, 1) - solution).abs().max()) > 0.1


def test_lbfgs_rolls_back_a_non_finite_step_and_goes_on() -> None:
    events: list[Any] = []
    start = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = optimize(
        poisoned_quadratic(torch.full((1, 3, 4, 4), 0.25), {3}),
        start,
        steps=15,
        callback=lambda s, img: events.append(s),
        sync_every=3,
    )
    assert result.recoveries == 1 and "recovered" in events[2].event
    assert events[-1].losses["total"] < events[0].losses["total"] / 100
    assert torch.isfinite(result.image).all()


def test_cuda_graph_needs_a_cuda_device(model_info) -> None:  # type: ignore[no-untyped-def]
    from nst_engine.optim.graphs import CudaGraphStep

    config = StyleConfig(size=32)
    objective, content = _objective(model_info, config)
    param = content.clone().requires_grad_(True)
    with pytest.raises(ProviderError, match="CUDA device"):
        CudaGraphStep(EagerStep(objective, lambda x: x, param, make_optimizer("lbfgs", param, 1.0, 3)))
    on = config.replace(cuda_graph="on", device="cpu")
    net = model_info.torch_module(on.layers)
    with pytest.raises(ProviderError, match="--cuda-graph on needs a CUDA device"):
        stylize(content, [content], config=on, net=net, targets=DirectTargets(net))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cuda_graph_replays_match_eager_steps_without_syncs(model_info, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    """GPU only: the captured step gives the eager steps' losses, and neither kind of step syncs with the host."""
    from nst_engine.optim.graphs import CudaGraphStep

    config = StyleConfig(size=64, optimizer=optimizer, device="cuda")  # type: ignore[arg-type]
    net = model_info.torch_module(config.layers).cuda()
    content, style = gradient_image(64, 64, seed=1).cuda(), gradient_image(64, 64, seed=2).cuda()
    with torch.no_grad():
        c_t, s_t = content_target(net, content, config.content_layers), style_target(net, style, config.style_layers)

    def make() -> EagerStep:
        objective = Objective.of(net, c_t, [StyleRegion(s_t)], config).accelerate(torch.device("cuda"))
        param = content.clone().requires_grad_(True)
        return EagerStep(objective, lambda x: x, param, make_optimizer(optimizer, param, config.learning_rate, 5))

    eager, graphed = make(), CudaGraphStep(make(), required=True)
    pairs = [(eager()[0], graphed()[0]) for _ in range(10)]  # warm-up, capture and checked replays
    assert "captured" in graphed.take_note()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pairs += [(eager()[0], graphed()[0]) for _ in range(6)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in pairs:
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6)
