"""The whole optimisation step (forward, gradient to the pixels, optimiser update) captured in one CUDA graph.

At 512 px on a fast GPU a step is a few milliseconds of kernels; launching them one by one from Python, and
L-BFGS's hundreds of small vector kernels, costs about as much again. A graph replays all of them with one
launch. What makes it possible is in the step itself: no host syncs and state updated in place
(``engine.optim.lbfgs``, ``engine.optim.adam``), so one capture is valid for every later step at that size.

The capture is checked before it is trusted: from one snapshot of the state, two eager steps and two replays
must give the same losses and pixels (two, so that state a replay fails to carry forward shows up). If the
capture fails or disagrees, "auto" runs eager steps and says why in the next step's event; "on" raises.
"""

from __future__ import annotations

import torch

from nst_engine.errors import ProviderError
from nst_engine.optim.step import EagerStep

#: Eager steps (on a side stream, as CUDA graph capture wants) before the capture: cuDNN autotuning and
#: autograd's lazy set-up happen here, not in the graph.
WARMUP_STEPS = 3
#: Eager steps compared with replays when checking a capture.
VERIFY_STEPS = 2


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:200]


class CudaGraphStep:
    """Drop-in for ``EagerStep``: eager warm-up steps, then one capture, then replays."""

    def __init__(self, eager: EagerStep, required: bool = False) -> None:
        if not eager.param.is_cuda:
            raise ProviderError("CUDA graphs need the image on a CUDA device; use --cuda-graph off on CPU")
        self.eager = eager
        self.required = required
        self.graph: torch.cuda.CUDAGraph | None = None
        self.values: torch.Tensor | None = None
        self.code: torch.Tensor | None = None
        self.failed = ""
        self.note = ""
        self.calls = 0
        self.stream = torch.cuda.Stream(device=eager.param.device)

    @property
    def names(self) -> tuple[str, ...]:
        return self.eager.names

    def take_note(self) -> str:
        """What happened to the capture, once (the reporter puts it in a step's event)."""
        note, self.note = self.note, ""
        return note

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is None and not self.failed:
            self.calls += 1
            if self.calls <= WARMUP_STEPS:
                return self._on_side_stream()
            try:
                self._capture()
                self.note = "cuda graph: whole step captured and checked against eager steps"
            except Exception as exc:  # any capture failure means: run eager steps instead
                self.graph = None
                self.failed = _reason(exc)
                if self.required:
                    raise ProviderError(
                        f"--cuda-graph on: the step could not be captured ({self.failed}); use --cuda-graph auto"
                    ) from exc
                self.note = f"cuda graph: not used ({self.failed})"
        if self.graph is None:
            return self.eager()
        assert self.values is not None and self.code is not None
        self.graph.replay()
        return self.values.clone(), self.code.clone()

    def _on_side_stream(self) -> tuple[torch.Tensor, torch.Tensor]:
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = self.eager()
        current.wait_stream(self.stream)
        return out

    def _capture(self) -> None:
        state = self.eager.state()
        snapshot = [t.detach().clone() for t in state]
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                values, code = self.eager()
            reference = [self.eager()[0] for _ in range(VERIFY_STEPS)]
            expected_pixels = self.eager.param.detach().clone()
            _restore(state, snapshot)
            replayed = []
            for _ in range(VERIFY_STEPS):
                graph.replay()
                replayed.append(values.clone())
            same_losses = torch.allclose(torch.stack(replayed), torch.stack(reference), rtol=1e-3, atol=1e-7)
            same_pixels = torch.allclose(self.eager.param.detach(), expected_pixels, rtol=0, atol=1e-4)
            if not (same_losses and same_pixels):
                raise RuntimeError("graph replays differ from eager steps")
        finally:
            _restore(state, snapshot)  # whatever happened, continue from where the warm-up left off
        self.graph, self.values, self.code = graph, values, code


def _restore(state: list[torch.Tensor], snapshot: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for live, saved in zip(state, snapshot, strict=True):
            live.copy_(saved)
