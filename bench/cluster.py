"""The cluster case (issue 24): images per minute for a batch on a local Ray cluster with 1 and 2 workers,
against the local batch runner, in one run. Outputs are compared byte for byte with the local runner's."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from nst_engine import images
from nst_engine.api import Session
from nst_engine.bench.cases import Setup
from nst_engine.cluster import ClusterRunner, require_ray
from nst_engine.config import StyleConfig
from nst_engine.jobs import Job
from nst_engine.spec import ModelSpec


def cluster_case(setup: Setup, count: int, size: int, steps: int, workers: list[int]) -> list[dict[str, Any]]:
    ray = require_ray()
    config = StyleConfig(size=size, steps=steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = []
        for i in range(count):  # the same photo at slightly different sizes: distinct images, similar work
            path = Path(tmp) / f"photo{i}.png"
            images.save(images.load(setup.content, size + 4 * i), path)
            photos.append(path)

        def session() -> Session:
            return Session(config, [setup.style], model=ModelSpec(model=setup.model_path, use_cache=False))

        local = [Job(p, Path(tmp) / "local" / f"{p.stem}.png") for p in photos]
        setup.log(f"cluster: {count} images at {size} px, {steps} steps, local batch")
        start = time.perf_counter()
        session().run(local)
        seconds = time.perf_counter() - start
        rows.append({"runner": "local batch", "workers": 0, "seconds": seconds, "images_per_min": 60 * count / seconds})
        for n in workers:
            setup.log(f"cluster: {count} images on Ray with {n} workers")
            jobs = [Job(p, Path(tmp) / f"ray{n}" / f"{p.stem}.png") for p in photos]
            start = time.perf_counter()
            runner = ClusterRunner(session(), None, n)
            summary = runner.run(jobs)
            seconds = time.perf_counter() - start  # with Ray's start-up and the actors' model loading
            runner.shutdown()
            same = all(a.output.read_bytes() == b.output.read_bytes() for a, b in zip(jobs, local, strict=True))
            overheads = sorted(r.overhead for r in summary.results if r.status == "done")
            rows.append(
                {"runner": "ray", "workers": n, "seconds": seconds, "images_per_min": 60 * count / seconds}
                | {"done": summary.count("done"), "byte_equal_to_local": same, "ray": ray.__version__}
                | {"actor_start_s": summary.actor_start, "overhead_s": overheads}
                | {"image_seconds": [r.seconds for r in summary.results if r.status == "done"]}
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Cluster (local Ray)",
        "",
        "Wall time from the call to the last output written, Ray's start-up and the workers' model loading "
        "included; each worker has CPUs / workers torch threads, the local batch all of them.",
        "",
        "Actor start: from asking for the workers to all of them holding an open session (model bytes and "
        "targets from the object store). Overhead per image: the driver's round trip (pixels out, result back, "
        "scheduling) less the worker's own time on it, median [max].",
        "",
        "| runner | workers | seconds | images/min | actor start (s) | overhead per image (s) "
        "| outputs byte-equal to the local runner's |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["runner"] == "local batch":
            lines.append(f"| local batch | | {r['seconds']:.1f} | {r['images_per_min']:.2f} | | | |")
            continue
        same = "yes" if r["byte_equal_to_local"] else "no"
        over = r.get("overhead_s") or [0.0]
        lines.append(
            f"| ray | {r['workers']} | {r['seconds']:.1f} | {r['images_per_min']:.2f} "
            f"| {r.get('actor_start_s', 0):.1f} | {over[len(over) // 2]:.3f} [{over[-1]:.3f}] | {same} |"
        )
    return [*lines, ""]
