"""Timing with warm-up, GPU synchronisation and every sample kept; peak memory on CPU and GPU."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 5) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` calls first (not kept), then ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p10": ordered[max(0, round(0.1 * (n - 1)))],
        "p90": ordered[min(n - 1, round(0.9 * (n - 1)))],
        "n": n,
        "samples": samples,
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: torch's counter on CUDA; the process's peak RSS (VmHWM) on Linux."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
