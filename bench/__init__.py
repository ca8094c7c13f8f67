"""Benchmarks of nst-engine: cases as data, a runner that returns rows, a report renderer."""

DEFAULT_CASES = ("forward", "step", "ttq", "cache", "multiscale")
#: Every case; those not in DEFAULT_CASES run only when asked for (tiling takes about 20 minutes on a CPU).
ALL_CASES = (*DEFAULT_CASES, "tiling", "video", "cluster", "web", "startup", "losses", "profile", "print")
