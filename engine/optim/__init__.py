"""The optimisers and their step machinery: L-BFGS and Adam with device-side state, one step as device work
(eager or one CUDA graph replay), and the loop that runs steps and reports them."""

from nst_engine.optim.loop import Callback, OptimizeResult, Step, optimize

__all__ = ["Callback", "OptimizeResult", "Step", "optimize"]
