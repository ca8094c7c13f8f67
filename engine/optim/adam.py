"""Adam on image pixels, clamped to [0, 1] after each step, with the same contract as ``engine.optim.lbfgs.LBFGS``.

Written out rather than wrapping ``torch.optim.Adam`` so that a step never waits on the host: a non-finite
loss or gradient is detected on the device and rolls the pixels back to the last good point with the
learning rate halved, all with ``torch.where``; the state is tensors updated in place (CUDA-graph safe).
The update is torch's: ``x -= lr * m_hat / (sqrt(v_hat) + eps)``.
"""

from __future__ import annotations

from typing import Any

import torch

from nst_engine.optim.lbfgs import load_in_place, outcome


class Adam:
    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        x = param.detach()
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = x.new_zeros(())  # finite steps taken (float: it is an exponent)
        self.lr = x.new_tensor(lr)
        self.prev_x = x.clone()

    def step(self, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(loss.detach()) & torch.isfinite(grad).all()
        g = torch.where(finite, grad, 0.0)
        b1, b2 = self.beta1, self.beta2
        self.t.add_(finite.to(self.t.dtype))
        self.m.copy_(torch.where(finite, self.m * b1 + g * (1 - b1), self.m))
        self.v.copy_(torch.where(finite, self.v * b2 + g * g * (1 - b2), self.v))
        t = self.t.clamp(min=1.0)  # before the first finite step the update is discarded anyway
        m_hat = self.m / (1 - b1**t)
        v_hat = self.v / (1 - b2**t)
        moved = (x - self.lr * m_hat / (v_hat.sqrt() + self.eps)).clamp(0.0, 1.0)
        new_x = torch.where(finite, moved, self.prev_x)
        self.prev_x.copy_(torch.where(finite, x, self.prev_x))
        self.lr.copy_(torch.where(finite, self.lr, self.lr / 2))
        x.copy_(new_x)
        return outcome(finite, torch.zeros_like(finite))

    def last_good(self) -> torch.Tensor:
        return self.prev_x

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t, "lr": self.lr, "prev_x": self.prev_x}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_in_place(self.state_dict(), state)
