"""The on-disk target cache: content features and style statistics, computed once and reused across runs.

Entries are safetensors files (plain tensors and a string header: nothing in them can run code when loaded).
Each holds a sha256 of its tensors; an entry that fails to parse or check is reported, deleted and recomputed.
Writes go to a temporary file that is renamed into place, so readers see a whole entry or none, and two
processes filling one cache at once at worst both compute the same entry.

The key is a hash of everything that changes the numbers: the pixels after resizing (and their shape), the
layers, the pooling, the model file's sha256, the ONNX Runtime provider and its precision. Nothing else
(step counts, loss weights, output paths) is in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from engine.files import write_atomic
from engine.losses import StyleStats
from engine.targets import Encoder, StyleTarget, TargetRecord, content_target, style_target

CACHE_FORMAT = "1"
CACHE_ENV = "NST_ENGINE_CACHE"


def default_cache_dir() -> Path:
    """``$NST_ENGINE_CACHE``, else the platform's user cache directory (``~/.cache/nst-engine`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(user_cache_dir("nst-engine", appauthor=False))


Tensors = dict[str, torch.Tensor]


def pixels_sha256(image: torch.Tensor) -> str:
    """Digest of a (1, 3, H, W) image's float32 pixels and shape."""
    data = image.detach().float().contiguous().cpu()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def tensors_sha256(tensors: Tensors) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def target_key(
    kind: str,
    image: torch.Tensor,
    layers: Sequence[str],
    pooling: str,
    model_sha256: str,
    provider: str,
    precision: str,
) -> str:
    """The cache key of one target; see the module docstring for what goes in and why."""
    fields = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "pixels": pixels_sha256(image),
        "shape": list(image.shape),
        "layers": list(layers),
        "pooling": pooling,
        "model": model_sha256,
        "provider": provider,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    targets: int
    models: int
    bytes: int


class TargetCache:
    """Key -> tensors on disk under ``root/targets``; exported models live beside them in ``root/models``."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.warn = warn or (lambda message: None)

    def _path(self, key: str) -> Path:
        return self.root / "targets" / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> Tensors | None:
        """The tensors stored under ``key``, or None if absent or damaged (a damaged entry is removed)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            tensors = load_safetensors(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            stored = header.get("__metadata__", {}).get("sha256")
            if stored != tensors_sha256(tensors):
                raise ValueError("checksum mismatch")
        except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged entry
            self.warn(f"cache entry {path.name} is damaged ({str(exc)[:60] or type(exc).__name__}); recomputing it")
            path.unlink(missing_ok=True)
            return None
        return tensors

    def save(self, key: str, tensors: Tensors, kind: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
        blob = save_safetensors(cpu, metadata={"sha256": tensors_sha256(cpu), "kind": kind, "format": CACHE_FORMAT})
        write_atomic(path, blob)  # its temporary file ends in .tmp, never .safetensors

    def info(self) -> CacheInfo:
        # Temporary files of writes in progress (or killed mid-write) end in .tmp and are not entries.
        targets = list((self.root / "targets").glob("*/[0-9a-f]*.safetensors"))
        models = list((self.root / "models").glob("*.onnx"))
        files = [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []
        return CacheInfo(self.root, len(targets), len(models), sum(p.stat().st_size for p in files))

    def clear(self) -> CacheInfo:
        """Delete every target and model; returns what was there."""
        before = self.info()
        for sub in ("targets", "models", "tensorrt"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        return before


def _style_to_tensors(target: StyleTarget) -> Tensors:
    out: Tensors = {}
    for layer, stats in target.items():
        out[f"{layer}.moment"], out[f"{layer}.mean"] = stats.moment, stats.mean
    return out


def _style_from_tensors(tensors: Tensors, layers: Sequence[str]) -> StyleTarget:
    return {layer: StyleStats(tensors[f"{layer}.moment"], tensors[f"{layer}.mean"]) for layer in layers}


class CachedTargets:
    """A TargetSource that looks in the cache first and stores what it computes."""

    def __init__(
        self, encoder: Encoder, cache: TargetCache, model_sha256: str, provider: str, precision: str, pooling: str
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.ident = (pooling, model_sha256, provider, precision)
        self.records: list[TargetRecord] = []
        self._memo: dict[str, StyleTarget] = {}  # a batch reads each style's targets from disk once

    def _key(self, kind: str, image: torch.Tensor, layers: Sequence[str]) -> str:
        return target_key(kind, image, layers, *self.ident)

    def content(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        start, key = time.perf_counter(), self._key("content", image, layers)
        found = self.cache.load(key)
        if found is not None and all(layer in found for layer in layers):
            self._record("content", image, start, hit=True)
            return {layer: found[layer] for layer in layers}
        out = content_target(self.encoder, image, layers)
        self.cache.save(key, out, "content")
        self._record("content", image, start, hit=False)
        return out

    def style(self, image: torch.Tensor, layers: Sequence[str]) -> StyleTarget:
        start, key = time.perf_counter(), self._key("style", image, layers)
        if key in self._memo:
            self._record("style", image, start, hit=True, where="memory")
            return self._memo[key]
        found = self.cache.load(key)
        if found is not None and all(f"{layer}.moment" in found for layer in layers):
            self._memo[key] = _style_from_tensors(found, layers)
            self._record("style", image, start, hit=True)
            return self._memo[key]
        out = self._memo[key] = style_target(self.encoder, image, layers)
        self.cache.save(key, _style_to_tensors(out), "style")
        self._record("style", image, start, hit=False)
        return out

    def _record(self, kind: str, image: torch.Tensor, start: float, hit: bool, where: str = "") -> None:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        seconds = time.perf_counter() - start
        status = where or ("hit" if hit else "miss")
        self.records.append(TargetRecord(kind, size, seconds, status, forward=not hit))
