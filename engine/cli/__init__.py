"""``nst-engine``: the command line. It parses options, hands them to a Session (or the exporter, the cache,
the benchmarks) and renders what comes back; expected errors are one red line and an exit code."""

from nst_engine.cli import bench, cache, export, serve, stylize, video
from nst_engine.cli.app import app, main

__all__ = ["app", "bench", "cache", "export", "main", "serve", "stylize", "video"]
