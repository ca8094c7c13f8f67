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

import contextlib
import hashlib
import json
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from nst_engine.cache_folder import MARKER, CacheInfo, clear_folder, folder_info
from nst_engine.files import write_atomic
from nst_engine.losses.functional import StyleStats
from nst_engine.targets import Encoder, StyleTarget, TargetRecord, content_target, style_target

CACHE_FORMAT = "1"


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


#: No entry is this large (content features of a 4096 px image at relu4_2 are about 400 MB): a larger file is
#: not one of ours, and is not read.
MAX_ENTRY_BYTES = 1 << 30


class TargetCache:
    """Key -> tensors on disk under ``root/targets``; exported models live beside them in ``root/models``.

    The cache is a convenience: when its folder cannot be written (read-only, a file in the way) the run warns
    once and goes on computing every target."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.warn = warn or (lambda message: None)
        self.usable = True

    def _path(self, key: str) -> Path:
        return self.root / "targets" / key[:2] / f"{key}.safetensors"

    def claim(self) -> None:
        """Create the cache folder (if need be) and mark it as nst-engine's."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            write_atomic(marker, b"nst-engine cache: targets/ and models/ in this folder are written by nst-engine\n")

    def _unusable(self, exc: OSError) -> None:
        if self.usable:
            self.warn(f"cache '{self.root}' cannot be used ({exc.strerror or exc}); running without it")
        self.usable = False

    def load(self, key: str) -> Tensors | None:
        """The tensors stored under ``key``, or None if absent or damaged (a damaged entry is removed)."""
        if not self.usable:
            return None
        path = self._path(key)
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # a file where a folder should be
            self._unusable(exc)
            return None
        try:
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            if info.st_size > MAX_ENTRY_BYTES:
                raise ValueError(f"{info.st_size} bytes, larger than any entry")
            data = path.read_bytes()
            tensors = load_safetensors(data)
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
            if meta.get("key") != key:
                raise ValueError("stored under another key")
            if meta.get("sha256") != tensors_sha256(tensors):
                raise ValueError("checksum mismatch")
        except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged entry
            self.warn(f"cache entry {path.name} is damaged ({str(exc)[:60] or type(exc).__name__}); recomputing it")
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return tensors

    def save(self, key: str, tensors: Tensors, kind: str) -> None:
        if not self.usable:
            return
        cpu = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
        meta = {"sha256": tensors_sha256(cpu), "kind": kind, "format": CACHE_FORMAT, "key": key}
        try:
            self.claim()
            write_atomic(self._path(key), save_safetensors(cpu, metadata=meta))  # temporaries end in .tmp
        except OSError as exc:
            self._unusable(exc)

    def info(self) -> CacheInfo:
        return folder_info(self.root)

    def clear(self) -> CacheInfo:
        return clear_folder(self.root)


def _style_to_tensors(target: StyleTarget) -> Tensors:
    out: Tensors = {}
    for layer, stats in target.items():
        out[f"{layer}.moment"], out[f"{layer}.mean"] = stats.moment, stats.mean
        if stats.samples is not None:
            out[f"{layer}.samples"] = stats.samples
    return out


def _style_from_tensors(tensors: Tensors, layers: Sequence[str]) -> StyleTarget:
    return {
        layer: StyleStats(tensors[f"{layer}.moment"], tensors[f"{layer}.mean"], tensors.get(f"{layer}.samples"))
        for layer in layers
    }


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
        # An entry from before feature samples were kept lacks them: computed again (and replaced).
        if found is not None and all(f"{layer}.moment" in found and f"{layer}.samples" in found for layer in layers):
            self._memo[key] = _style_from_tensors(found, layers)
            self._record("style", image, start, hit=True)
            return self._memo[key]
        out = self._memo[key] = style_target(self.encoder, image, layers)
        self.cache.save(key, _style_to_tensors(out), "style")
        self._record("style", image, start, hit=False)
        return out

    def styles(self) -> dict[Any, StyleTarget]:
        return dict(self._memo)

    def preload(self, styles: Mapping[Any, StyleTarget]) -> None:
        self._memo.update(styles)

    def _record(self, kind: str, image: torch.Tensor, start: float, hit: bool, where: str = "") -> None:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        seconds = time.perf_counter() - start
        status = where or ("hit" if hit else "miss")
        self.records.append(TargetRecord(kind, size, seconds, status, forward=not hit))
