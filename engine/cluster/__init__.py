"""Batches and clips on a Ray cluster: ``nst-engine stylize PHOTOS... --style S -o DIR --cluster ray[:ADDRESS]``
and ``nst-engine video CLIP -o OUT --style S --cluster ray``.

The driver opens the session (exporting the model into the cache if need be), computes every scale's style
targets once, and puts the model file, the style images and those targets in Ray's object store once. Each
worker is an actor that opens its own session from them, once, with the style targets preloaded, and then
takes image after image (or chunk after chunk of a clip); its torch threads are its CPU share. The driver reads
each content image and sends its pixels, and writes each result itself, atomically, so a worker needs no shared
file system and no output is written twice.

A worker process that dies mid-task (killed, out of memory, its node lost) has its task retried on another
worker, and a replacement actor is started. An image that fails for its own reasons (a bad file) is reported
once and not retried. Outputs that exist are skipped (a rerun continues), and Ctrl-C stops the cluster's work
with nothing half-written.

Modules: ``connect`` (the --cluster and --workers values, starting or joining Ray), ``pool`` (the actors and the
one loop that hands them tasks), ``workers`` (the actors' bodies), ``batch`` (images) and ``video`` (clips).
"""

from nst_engine.cluster.batch import ClusterProgress, ClusterResult, ClusterRunner, ClusterSummary
from nst_engine.cluster.connect import JOIN_SECONDS, MAX_WORKERS, check_workers, parse_cluster, require_ray
from nst_engine.cluster.pool import MAX_RETRIES, STALL_SECONDS
from nst_engine.cluster.video import CUT_THRESHOLD, ClusterVideoResult, chunks_of, run_video

__all__ = [
    "CUT_THRESHOLD",
    "JOIN_SECONDS",
    "MAX_RETRIES",
    "MAX_WORKERS",
    "STALL_SECONDS",
    "ClusterProgress",
    "ClusterResult",
    "ClusterRunner",
    "ClusterSummary",
    "ClusterVideoResult",
    "check_workers",
    "chunks_of",
    "parse_cluster",
    "require_ray",
    "run_video",
]
