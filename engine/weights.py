"""Where VGG19 weights come from: torchvision's ImageNet file (downloaded once), a local file, or seeded random.

Only the convolution weights of ``features`` are used; a classifier in the file is ignored.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import WeightsError
from engine.layers import CONV_INDICES
from engine.vgg import CONV_SHAPES

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
#: Overrides the download address (a mirror, or the tests' local server). The file name must keep
#: torchvision's ``NAME-HASH.pth`` form: HASH is the start of the file's sha256 and is checked.
URL_ENV = "NST_ENGINE_VGG19_URL"
RANDOM_NOTE = "seeded random weights, not pretrained: results show the engine working, not real style transfer"

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Weights:
    """A loaded set of VGG19 convolution weights and where they came from."""

    state: State
    source: str  # "vgg19", "random:SEED" or a file path
    sha256: str  # of the file, or of the generated tensors for random weights
    pretrained: bool

    @property
    def label(self) -> str:
        return self.source if self.pretrained else f"{self.source} ({RANDOM_NOTE})"


def resolve(spec: str) -> Weights:
    """Load weights named by ``--weights``: ``vgg19``, ``random``, ``random:SEED`` or a file path."""
    if spec == "vgg19":
        return download_vgg19()
    if spec == "random" or spec.startswith("random:"):
        seed_text = spec.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise WeightsError(f"bad seed in '--weights {spec}'; use 'random' or 'random:SEED' with SEED an integer")
        return random_weights(int(seed_text))
    return load_file(Path(spec))


def random_weights(seed: int = 0) -> Weights:
    """Orthogonal random convolutions with gain sqrt(2) (the ReLU gain), zero biases.

    Orthogonal rather than He-normal: with i.i.d. normal filters a few input directions are amplified by
    every layer, the loss is badly conditioned in pixel space and L-BFGS crawls for dozens of steps before
    it diverges; orthogonal filters bound every layer's gain, and L-BFGS converges as it does on a trained VGG.
    """
    gen = torch.Generator().manual_seed(seed)
    state: State = {}
    for index in CONV_INDICES:
        cin, cout = CONV_SHAPES[index]
        weight = torch.empty(cout, cin * 9)
        torch.nn.init.orthogonal_(weight, gain=2.0**0.5, generator=gen)
        state[f"features.{index}.weight"] = weight.view(cout, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(cout)
    return Weights(state, f"random:{seed}", state_sha256(state), pretrained=False)


def state_sha256(state: State) -> str:
    """A digest of tensors by key, shape and bytes: equal weights give equal digests."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to(torch.float32).contiguous().cpu()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(path: Path) -> Weights:
    """A torchvision-format file (``features.N.weight``/``.bias``), read without running code in it."""
    if not path.is_file():
        raise WeightsError(
            f"weights file '{path}' not found; pass --weights vgg19, random, random:SEED or a path to a .pth file"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            raw: object = load_safetensors(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"cannot read weights file '{path}' ({first[:160]}); is it a torchvision .pth file?"
        ) from exc
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise WeightsError(f"'{path}' holds a {type(raw).__name__}, not a state dict of VGG19 weights")
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor) and k.startswith("features.")}
    check_state(state, str(path))
    return Weights(state, str(path), file_sha256(path), pretrained=True)


def check_state(state: State, where: str) -> None:
    """Raise WeightsError unless every VGG19 convolution is present with the right shape."""
    for index in CONV_INDICES:
        cin, cout = CONV_SHAPES[index]
        for kind, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            key = f"features.{index}.{kind}"
            if key not in state:
                raise WeightsError(
                    f"'{where}' has no '{key}'; expected a torchvision-format VGG19 file (keys 'features.N.weight')"
                )
            if tuple(state[key].shape) != shape:
                raise WeightsError(
                    f"'{key}' in '{where}' has shape {tuple(state[key].shape)}, VGG19 needs {shape}; "
                    "is it a VGG19 file (not VGG16 or another network)?"
                )


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_vgg19() -> Weights:
    """torchvision's ImageNet VGG19, fetched once into the torch hub cache with torch's hash check."""
    url = os.environ.get(URL_ENV, VGG19_URL)
    filename = url.rsplit("/", 1)[-1]
    match = re.search(r"-([a-f0-9]{8,})\.", filename)
    if match is None:
        raise WeightsError(f"download URL '{url}' must end in NAME-HASH.pth (HASH: the sha256 prefix of the file)")
    cached = hub_checkpoint_dir() / filename
    if cached.is_file() and not file_sha256(cached).startswith(match.group(1)):
        # torch checks the hash only while downloading: a file damaged later would load silently.
        cached.unlink()
    try:
        raw = torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(hub_checkpoint_dir()),
            map_location="cpu",
            progress=True,
            check_hash=True,
            weights_only=True,
        )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsError(
            f"cannot download VGG19 weights from {url} ({exc}); offline, put {filename} in "
            f"{hub_checkpoint_dir()}/ or pass --weights PATH (or --weights random for a test run)"
        ) from exc
    except RuntimeError as exc:
        if "hash" in str(exc):
            raise WeightsError(
                f"downloaded {filename} failed its sha256 check and was discarded; try again, or place a good "
                f"copy in {hub_checkpoint_dir()}/"
            ) from exc
        raise WeightsError(f"cannot load {filename}: {exc}") from exc
    state = {k: v for k, v in raw.items() if k.startswith("features.")}
    check_state(state, filename)
    return Weights(state, "vgg19", file_sha256(cached), pretrained=True)
