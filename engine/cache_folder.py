"""The cache folder as a whole: what it holds, and emptying it. No torch here: ``nst-engine cache info`` and
``cache clear`` start at once (engine.cache reads and writes the entries themselves)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from nst_engine.errors import ConfigError
from nst_engine.files import TMP_SUFFIX

#: The file that marks a folder as an nst-engine cache: ``cache clear`` deletes only inside a folder holding it.
MARKER = ".nst-engine-cache"
#: A target entry's file name: its key and the format.
ENTRY = re.compile(r"[0-9a-f]{64}\.safetensors")


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    targets: int
    models: int
    bytes: int


#: The folders this engine writes inside its cache (targets, exported models, flows, TensorRT's engines).
CACHE_FOLDERS = ("targets", "models", "flows", "tensorrt")


def tree_bytes(folder: Path, device: int) -> int:
    """Bytes of the regular files under ``folder``, not following symlinks nor leaving its file system."""
    total, pending = 0, [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device or stat.S_ISLNK(info.st_mode):
                continue
            if stat.S_ISDIR(info.st_mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def folder_info(root: Path) -> CacheInfo:
    """What the cache holds. Only a folder marked as a cache is walked, and only the folders this engine
    writes, never through a symlink or onto another file system (``NST_ENGINE_CACHE=/`` reads one folder
    listing and stops)."""
    if not root.exists():
        return CacheInfo(root, 0, 0, 0)
    if not root.is_dir():
        raise ConfigError(f"cache '{root}' is a file, not a cache folder; check --cache-dir or $NST_ENGINE_CACHE")
    try:
        marked = (root / MARKER).is_file()
        empty = marked or not any(root.iterdir())
    except OSError as exc:
        raise ConfigError(f"cannot read cache folder '{root}' ({exc.strerror}); check its permissions") from None
    if not marked:
        if empty:
            return CacheInfo(root, 0, 0, 0)
        raise ConfigError(
            f"'{root}' is not an nst-engine cache (it has no {MARKER} file), so it was not read; give the folder "
            "nst-engine uses (unset $NST_ENGINE_CACHE and --cache-dir for the default)"
        )
    # Temporary files of writes in progress (or killed mid-write) end in .tmp and are not entries.
    targets = list((root / "targets").glob("*/[0-9a-f]*.safetensors"))
    models = list((root / "models").glob("*.onnx"))
    device = root.stat().st_dev
    size = sum(tree_bytes(root / part, device) for part in CACHE_FOLDERS)
    return CacheInfo(root, len(targets), len(models), size)


def clear_folder(root: Path) -> CacheInfo:
    """Delete every target and model this cache wrote, and nothing else; returns what was there.

    A folder without the marker is refused (unless it is empty): it may be someone's own ``models/``."""
    if not root.exists():
        return folder_info(root)
    if not root.is_dir():
        raise ConfigError(f"cache '{root}' is a file, not a cache folder; check --cache-dir")
    if not (root / MARKER).is_file() and any(root.iterdir()):
        raise ConfigError(
            f"'{root}' is not an nst-engine cache (it has no {MARKER} file); nothing was deleted. "
            "Give the folder nst-engine uses (nst-engine cache info), or delete this one yourself"
        )
    before = folder_info(root)
    for entry in (root / "targets").glob("*/*"):
        if entry.is_file() and (ENTRY.fullmatch(entry.name) or entry.name.endswith(TMP_SUFFIX)):
            entry.unlink()
    for model in (root / "models").glob("*"):
        if model.is_file() and (model.suffix == ".onnx" or model.name.endswith(TMP_SUFFIX)):
            model.unlink()
    shutil.rmtree(root / "tensorrt", ignore_errors=True)  # ONNX Runtime's engine cache, ours alone
    folders = [*(root / "targets").glob("*"), root / "targets", root / "models"]
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if now empty
    return before
