"""L-BFGS for images: the two-loop recursion over a fixed ring of curvature pairs, with a trust region in pixels.

Why not ``torch.optim.LBFGS``: style losses are quartic in the features (Gram matrices of Gram-sized
products), so curvature measured over torch's first step (1/|g|_1, a millionth of a grey level per pixel)
is far too small and the next quasi-Newton step overshoots by orders of magnitude; its strong-Wolfe search
then meets an overflowed trial point and returns a zero step. Here the first step and every later one are
capped in pixel units (no pixel moves by more than ``max_step`` per step), curvature pairs are kept only
when they are positive relative to their own size (no absolute threshold, so any loss scale works), and a
step that blows the loss up, or meets a non-finite loss or gradient, is undone with the trust region halved.

With ``bounds`` (pixels: (0, 1)) every point stays in the box, as in L-BFGS-B without its Cauchy point: a
coordinate at a bound whose gradient points out of the box is held (left out of the recursion and the step),
the rest take the quasi-Newton step, and the new point is projected into the box; the curvature pair is the move
actually made. So the loss the optimiser sees is the loss of the image saved, which clamping at read-out
(jcjohnson/neural-style) does not give; tests/test_step.py has a box-constrained quadratic it must solve.

The initial inverse-Hessian scale is Nocedal and Wright's y.s / y.y of the newest pair; a step that raises the
loss (by less than the blow-up factor) is not built on: its curvature pair is kept and the next step starts again
from the last accepted point at half the length, a backtracking line search spread over steps. Both were chosen on
trained features (docs/design.md, bench/reports/cpu-2core-real-defaults).

The step never waits on the host: every decision is a ``torch.where`` on device tensors, every piece of state
is a tensor of fixed shape updated in place, and the ring is addressed with device indices. That is what lets
a whole optimisation step be captured in a CUDA graph (``engine.optim.graphs``) and lets the host run ahead of the GPU.
On the CPU, where a read costs nothing and nothing runs ahead, the ring is addressed from the host instead
(``device_indexed=False``): views rather than gathered copies, and empty slots skipped; the steps are the same.
"""

from __future__ import annotations

from typing import Any

import torch

#: Trust region at the start of a run: the largest RMS pixel change of one step, in [0, 1] units.
DEFAULT_MAX_STEP = 0.02
#: Growth of the trust region after a capped step that lowered the loss.
GROW = 1.25
#: A step whose loss exceeds the previous loss by this factor is undone.
BLOWUP = 2.0

#: Step outcomes, returned as a device tensor by ``step`` and read by the host only when it reports.
OK, UNDONE, NON_FINITE = 0, 1, 2


def outcome(finite: torch.Tensor, blown: torch.Tensor) -> torch.Tensor:
    """The step's outcome code as an int8 device tensor (no host sync)."""
    code = torch.where(blown, UNDONE, OK)
    return torch.where(finite, code, NON_FINITE).to(torch.int8)


class LBFGS:
    """Minimises over a flat view of one tensor. Call ``step(x, loss, grad)`` with the loss and gradient at x;
    it updates x in place and returns the outcome code (OK, UNDONE or NON_FINITE, x restored) as a tensor."""

    def __init__(
        self,
        param: torch.Tensor,
        history: int = 100,
        max_step: float = DEFAULT_MAX_STEP,
        device_indexed: bool | None = None,
        bounds: tuple[float, float] | None = None,
        backtrack: bool = True,
        gamma: str = "short",
    ) -> None:
        """``backtrack``: retry from the last accepted point, shorter, after a step that raised the loss.
        ``gamma``: the initial inverse-Hessian scale, "short" y.s / y.y (Nocedal and Wright's) or "geometric"
        |s| / |y|. Both are experiments' switches (``registry.Tuning``), not options."""
        flat = param.detach().reshape(-1)
        n = flat.numel()
        self.history = history
        #: Address the ring with device indices (no host read: CUDA graphs, a host that runs ahead) or, on the
        #: CPU where reading the pair count costs nothing, with Python indices: views instead of index_select
        #: copies, and empty slots skipped. Same numbers either way.
        self.device_indexed = flat.device.type != "cpu" if device_indexed is None else device_indexed
        self.s = flat.new_zeros(history, n)
        self.y = flat.new_zeros(history, n)
        self.rho = flat.new_zeros(history)  # 0 marks an empty slot: it then changes nothing in the recursion
        self.count = torch.zeros((), dtype=torch.long, device=flat.device)  # pairs kept; ring slot = count % history
        self.max_step = flat.new_tensor(max_step)
        self.bounds = bounds
        self.prev_x = flat.clone()  # the last point with a finite loss, where an undone step returns to
        self.prev_g = torch.zeros_like(flat)
        self.prev_loss = flat.new_tensor(float("inf"))
        self.gamma = flat.new_zeros(())  # initial inverse-Hessian scale (gamma_kind); 0 until a pair is kept
        self.started = torch.zeros((), dtype=torch.bool, device=flat.device)
        #: Backtracking: a step that raised the loss is not built on; the next one starts again from the last
        #: accepted point, ``length`` times as long (halved after each rise, doubled back towards 1 after a success).
        self.backtrack = backtrack
        self.gamma_kind = gamma
        self.length = flat.new_ones(())
        self._ages = torch.arange(history, device=flat.device)

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        if not self.device_indexed:
            return self._direction_host(g)
        q = g.clone()
        slots = (self.count - 1 - self._ages) % self.history  # newest first; empty slots have rho 0
        alphas = []
        for i in range(self.history):
            j = slots[i : i + 1]
            a = self.rho.index_select(0, j) * torch.dot(self.s.index_select(0, j).view(-1), q)
            q.sub_(self.y.index_select(0, j).view(-1) * a)
            alphas.append(a)
        r = torch.where(self.gamma > 0, q * self.gamma, q)
        for i in reversed(range(self.history)):
            j = slots[i : i + 1]
            b = self.rho.index_select(0, j) * torch.dot(self.y.index_select(0, j).view(-1), r)
            r.add_(self.s.index_select(0, j).view(-1) * (alphas[i] - b))
        return r.neg_()

    def _direction_host(self, g: torch.Tensor) -> torch.Tensor:
        count = int(self.count)
        slots = [(count - 1 - age) % self.history for age in range(min(count, self.history))]
        q = g.clone()
        alphas = []
        for j in slots:
            a = self.rho[j] * torch.dot(self.s[j], q)
            q.sub_(self.y[j] * a)
            alphas.append(a)
        r = q * self.gamma if float(self.gamma) > 0 else q
        for j, a in zip(reversed(slots), reversed(alphas), strict=True):
            b = self.rho[j] * torch.dot(self.y[j], r)
            r.add_(self.s[j] * (a - b))
        return r.neg_()

    def _projected_direction(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The quasi-Newton direction over the free pixels: a pixel at a bound whose gradient pushes it further
        out is held where it is (left out of the recursion and of the step), as in L-BFGS-B's active set. If
        what is left is not a descent direction, the scaled gradient over the free pixels is taken instead."""
        lo, hi = self.bounds  # type: ignore[misc]
        free = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        q = torch.where(free, g, 0.0)
        direction = torch.where(free, self._direction(q), 0.0)
        fallback = torch.where(self.gamma > 0, q * self.gamma, q).neg()
        return torch.where(torch.dot(direction, q) < 0, direction, fallback)

    def _keep_pair(self, s: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        ys, yy, ss = torch.dot(y, s), torch.dot(y, y), torch.dot(s, s)
        keep = keep & (yy > 0) & (ys > 1e-10 * (yy * ss).sqrt())
        slot = (self.count % self.history).view(1)
        for ring, new in ((self.s, s), (self.y, y)):
            ring.index_copy_(0, slot, torch.where(keep, new, ring.index_select(0, slot).view(-1)).view(1, -1))
        self.rho.index_copy_(0, slot, torch.where(keep, 1.0 / ys, self.rho.index_select(0, slot)))
        self.count.add_(keep.long())
        gamma = (ss / yy).sqrt() if self.gamma_kind == "geometric" else ys / yy
        self.gamma.copy_(torch.where(keep, gamma, self.gamma))

    def step(self, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        flat_x, g = x.view(-1), grad.reshape(-1)
        loss = loss.detach().float()
        finite = torch.isfinite(loss) & torch.isfinite(g).all()
        blown = self.started & (loss > self.prev_loss * BLOWUP + 1e-12)
        ok = finite & ~blown
        # The secant pair of a step that raised the loss is still true curvature: keep it either way.
        self._keep_pair(flat_x - self.prev_x, g - self.prev_g, ok & self.started)
        rise = ok & self.started & (loss > self.prev_loss) if self.backtrack else torch.zeros_like(ok)
        accept = ok & ~rise
        base_x = torch.where(rise, self.prev_x, flat_x)
        base_g = torch.where(rise, self.prev_g, g)
        self.length.copy_(
            torch.where(rise, self.length * 0.5, torch.where(accept, (self.length * 2).clamp(max=1.0), self.length))
        )
        direction = self._direction(base_g) if self.bounds is None else self._projected_direction(base_x, base_g)
        size = direction.pow(2).mean().sqrt()  # RMS pixel change: spiky directions are not penalised
        ratio = torch.where(size > 0, self.max_step / size, 0.0)
        # Until positive curvature is seen (near the content image the loss is often concave along the
        # gradient) take the whole trust region rather than a unit gradient step.
        capped = torch.where(self.gamma == 0, ratio, ratio.clamp(max=1.0))
        scale = capped * self.length
        # The region bound the step and held: try a larger one (a step shortened by backtracking is not bound).
        grow = accept & (capped < 1.0) & (loss < self.prev_loss)
        self.max_step.copy_(torch.where(ok, torch.where(grow, self.max_step * GROW, self.max_step), self.max_step / 2))
        new_x = torch.where(ok, base_x + direction * scale, self.prev_x)  # undo: back to the last good point
        if self.bounds is not None:
            new_x = new_x.clamp(*self.bounds)
        self.prev_x.copy_(torch.where(accept, flat_x, self.prev_x))
        self.prev_g.copy_(torch.where(accept, g, self.prev_g))
        self.prev_loss.copy_(torch.where(accept, loss, self.prev_loss))
        self.started.logical_or_(ok)
        flat_x.copy_(new_x)
        return outcome(finite, blown)

    def last_good(self) -> torch.Tensor:
        """The last point whose loss was finite (flat)."""
        return self.prev_x

    def state_dict(self) -> dict[str, Any]:
        """The live state tensors (clone them to keep a copy)."""
        return {
            "s": self.s,
            "y": self.y,
            "rho": self.rho,
            "count": self.count,
            "max_step": self.max_step,
            "prev_x": self.prev_x,
            "prev_g": self.prev_g,
            "prev_loss": self.prev_loss,
            "gamma": self.gamma,
            "length": self.length,
            "started": self.started,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy a saved state into this optimiser's tensors (in place: a captured graph keeps reading them)."""
        load_in_place(self.state_dict(), state)


def load_in_place(live: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    missing = sorted(set(live) - set(saved))
    if missing:
        raise ValueError(f"optimiser state lacks {', '.join(missing)}")
    for name, tensor in live.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"optimiser state '{name}' is {shape}, expected {tuple(tensor.shape)}")
        tensor.copy_(value)
