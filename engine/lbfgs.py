"""L-BFGS for images: the two-loop recursion over a fixed ring of curvature pairs, with a trust region in pixels.

Why not ``torch.optim.LBFGS``: style losses are quartic in the features (Gram matrices of Gram-sized
products), so curvature measured over torch's first step (1/|g|_1, a millionth of a grey level per pixel)
is far too small and the next quasi-Newton step overshoots by orders of magnitude; its strong-Wolfe search
then meets an overflowed trial point and returns a zero step. Here the first step and every later one are
capped in pixel units (no pixel moves by more than ``max_step`` per step), curvature pairs are kept only
when they are positive relative to their own size (no absolute threshold, so any loss scale works), and a
step that blows the loss up is undone with the trust region halved. All state is tensors of fixed shape.
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


class LBFGS:
    """Minimises over a flat view of one tensor. Call ``step(x, loss, grad)`` with the loss and gradient at x;
    it updates x in place and returns False when it undid the previous step instead (x restored)."""

    def __init__(self, param: torch.Tensor, history: int = 100, max_step: float = DEFAULT_MAX_STEP) -> None:
        n = param.numel()
        self.history = history
        self.s = param.new_zeros(history, n)
        self.y = param.new_zeros(history, n)
        self.rho = param.new_zeros(history)
        self.count = 0  # pairs written so far (the ring position is count % history)
        self.max_step = max_step
        self.prev_x: torch.Tensor | None = None
        self.prev_g: torch.Tensor | None = None
        self.prev_loss = float("inf")
        self.gamma = 0.0  # initial inverse-Hessian scale; 0 until a pair is kept

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        q = g.clone()
        kept = min(self.count, self.history)
        order = [(self.count - 1 - i) % self.history for i in range(kept)]  # newest first
        alphas = []
        for i in order:
            a = self.rho[i] * torch.dot(self.s[i], q)
            q -= a * self.y[i]
            alphas.append(a)
        r = q * self.gamma if self.gamma > 0 else q
        for i, a in zip(reversed(order), reversed(alphas), strict=True):
            b = self.rho[i] * torch.dot(self.y[i], r)
            r += self.s[i] * (a - b)
        return -r

    def step(self, x: torch.Tensor, loss: float, grad: torch.Tensor) -> bool:
        flat_x, g = x.view(-1), grad.reshape(-1)
        if self.prev_x is not None and loss > self.prev_loss * BLOWUP + 1e-12:
            flat_x.copy_(self.prev_x)  # undo: the quadratic model was wrong that far out
            self.max_step /= 2
            return False
        if self.prev_x is not None and self.prev_g is not None:
            s, y = flat_x - self.prev_x, g - self.prev_g
            ys = float(torch.dot(y, s))
            yy = float(torch.dot(y, y))
            if ys > 1e-10 * (yy * float(torch.dot(s, s))) ** 0.5 and yy > 0:
                slot = self.count % self.history
                self.s[slot], self.y[slot], self.rho[slot] = s, y, 1.0 / ys
                self.count += 1
                self.gamma = ys / yy
        direction = self._direction(g)
        size = float(direction.pow(2).mean().sqrt())  # RMS pixel change: spiky directions are not penalised
        if size == 0.0:
            return True
        # Until positive curvature is seen (near the content image the loss is often concave along the
        # gradient) take the whole trust region rather than a unit gradient step.
        scale = self.max_step / size if self.gamma == 0.0 else min(1.0, self.max_step / size)
        if scale < 1.0 and loss < self.prev_loss:
            self.max_step *= GROW  # the region held: try a larger one
        self.prev_x, self.prev_g, self.prev_loss = flat_x.clone(), g.clone(), loss
        flat_x.add_(direction, alpha=scale)
        return True

    def state_dict(self) -> dict[str, Any]:
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.s, self.y, self.rho = state["s"].clone(), state["y"].clone(), state["rho"].clone()
        self.count, self.max_step, self.gamma = int(state["count"]), float(state["max_step"]), float(state["gamma"])
        self.prev_x = None if state["prev_x"] is None else state["prev_x"].clone()
        self.prev_g = None if state["prev_g"] is None else state["prev_g"].clone()
        self.prev_loss = float(state["prev_loss"])
