"""Optical flow between content frames, warping, and Ruder et al.'s per-pixel certainty, for video.

Flow comes from OpenCV's DIS optical flow, on the content frames (never on stylised ones). A flow ``f`` from
frame a to frame b gives, for each pixel p of a, where it moved in b: a(p) ~ b(p + f(p)). To bring an image of
frame a into frame b's pixels, sample it at p + g(p) with g the flow from b to a (``warp``).

Certainty (Ruder, Dosovitskiy and Brox 2016, "Artistic style transfer for videos"), for the pixels of frame b:
0 where the forward and backward flows disagree (occlusions: |f~ + g|^2 > 0.01 (|f~|^2 + |g|^2) + 0.5, where f~
is the forward flow sampled along g), 0 at motion boundaries (|grad g|^2 > 0.01 |g|^2 + 0.002), 0 where g points
out of frame a (a pan's new edge), else 1; then slightly blurred. Flows are cached on disk as ``.npz`` (no
pickle), keyed by the two frames' pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nst_engine.files import write_atomic

#: Flows kept in memory (a frame's pairs with the 4 before it, both ways, and the warping error's).
MEMO_FLOWS = 16
#: Bump when the flow's parameters change: the cache key includes it.
FLOW_VERSION = "dis-medium-1"


def _gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luminance."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow from frame ``a`` to frame ``b`` (uint8 RGB frames of one size)."""
    if a.shape != b.shape:
        raise ValueError(f"frames of different sizes: {a.shape} and {b.shape}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
    flow = dis.calc(_gray(a), _gray(b), None)
    return np.asarray(flow, dtype=np.float32)


#: How earlier results are sampled when warped into a frame (``guide``): each warp of a bilinear sampler is a small
#: blur, and a chain of them blurs the texture a frame is held to. A bench switch (bench/reports/*video-quality).
RESULT_INTERPOLATION = cv2.INTER_LINEAR
#: Where a frame's pixels are new (no certain flow from the frame before), what they start from: "inpaint" (the
#: warped result filled in from around them, OpenCV's Telea), "content" (the content frame: an unpainted strip that
#: the frame's few steps leave streaked) or "matched" (the content frame in the colours of the rest of the warped
#: result). Measured on a pan: bench/reports/cpu-2core-video-quality. A bench switch, as above.
NEW_PIXEL_START = "inpaint"


def new_pixel_start(content: np.ndarray, warped: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: what the pixels the flow does not cover start from (``NEW_PIXEL_START``)."""
    start = content.astype(np.float32) / 255.0
    known = sure > 0.5
    if NEW_PIXEL_START == "content" or known.all() or not known.any():
        return start
    if NEW_PIXEL_START == "matched":
        mean_c, std_c = start[known].mean(axis=0), start[known].std(axis=0) + 1e-4
        mean_w, std_w = warped[known].mean(axis=0), warped[known].std(axis=0)
        return np.clip((start - mean_c) / std_c * std_w + mean_w, 0.0, 1.0).astype(np.float32)
    eight = np.round(np.clip(warped, 0.0, 1.0) * 255).astype(np.uint8)
    filled = cv2.inpaint(eight, (~known).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return np.where(known[..., None], warped, filled.astype(np.float32) / 255.0).astype(np.float32)


def warp(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` (H, W[, C]) sampled at p + flow(p), bilinear (or ``interpolation``, clipped to the image's range),
    with the border pixels repeated outside."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = np.ascontiguousarray(xs + flow[..., 0], dtype=np.float32)
    map_y = np.ascontiguousarray(ys + flow[..., 1], dtype=np.float32)
    source = np.ascontiguousarray(image)
    out = np.asarray(cv2.remap(source, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE))
    if interpolation in (cv2.INTER_CUBIC, cv2.INTER_LANCZOS4):  # these overshoot at edges
        out = np.clip(out, source.min(), source.max())
    return out


def certainty(forward: np.ndarray, backward: np.ndarray, blur: bool = True) -> np.ndarray:
    """(H, W) float32 in [0, 1] for the pixels of frame b, given the flows a->b (``forward``) and b->a."""
    along = warp(forward, backward)  # the forward flow at the place each pixel of b came from
    disagree = (
        np.sum((along + backward) ** 2, axis=-1)
        > 0.01 * (np.sum(along**2, axis=-1) + np.sum(backward**2, axis=-1)) + 0.5
    )
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > 0.01 * np.sum(backward**2, axis=-1) + 0.002
    h, w = backward.shape[:2]
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    x, y = xs + backward[..., 0], ys + backward[..., 1]
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)  # came from outside frame a: nothing to hold it to
    sure = (~(disagree | boundary | outside)).astype(np.float32)
    return cv2.GaussianBlur(sure, (3, 3), 0.8) if blur else sure


@dataclass(frozen=True)
class Guide:
    """What the temporal loss of one frame compares with: earlier results warped into this frame, each with its
    certainty (long-term ones reduced where a nearer frame already covers the pixel), plus the start image."""

    warped: list[np.ndarray]  # (H, W, 3) float32 in [0, 1]
    weights: list[np.ndarray]  # (H, W) float32 in [0, 1]
    init: np.ndarray  # (H, W, 3) float32: the warped previous result, filled in where it was disoccluded


def long_term(certainties: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Ruder's long-term weights, nearest frame first: each certainty less what the nearer ones already cover,
    clipped at 0."""
    out, covered = [], np.zeros_like(certainties[0])
    for c in certainties:
        out.append(np.clip(c - covered, 0.0, 1.0))
        covered = covered + c
    return out


class FlowCache:
    """Flows on disk under ``root`` (``root / key[:2] / key.npz``), or only computed when ``root`` is None."""

    def __init__(self, root: Path | None, warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.hits = self.misses = 0
        self.warn = warn or (lambda _m: None)
        #: The last few flows (a frame's pairs are asked for again by the next frames and by warping_error).
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    @staticmethod
    def key(a: np.ndarray, b: np.ndarray) -> str:
        digest = hashlib.sha256(FLOW_VERSION.encode())
        for frame in (a, b):
            digest.update(str(frame.shape).encode())
            digest.update(np.ascontiguousarray(frame).tobytes())
        return digest.hexdigest()

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The flow from ``a`` to ``b``, from the cache when it holds it."""
        key = self.key(a, b)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        flow = self._memo[key] = self._load_or_compute(key, a, b)
        if len(self._memo) > MEMO_FLOWS:
            self._memo.popitem(last=False)
        return flow

    def _load_or_compute(self, key: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.root is None:
            self.misses += 1
            return dis_flow(a, b)
        path = self.root / key[:2] / f"{key}.npz"
        if path.is_file():
            flow, why = read_flow(path, key, a.shape[:2])
            if flow is not None:
                self.hits += 1
                return flow
            self.warn(f"flow cache entry {path.name} {why}; computed again and replaced")
        self.misses += 1
        flow = dis_flow(a, b)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, flow=flow, key=np.array(key))
        with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
            write_atomic(path, buffer.getvalue())
        return flow

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(forward a->b, backward b->a)."""
        return self.flow(a, b), self.flow(b, a)


def read_flow(path: Path, key: str, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """A cached flow for frames of ``shape`` (H, W), or None and why it cannot be used: the file's size and the
    array's declared shape and type are checked before anything is allocated, and the values after (finite, and
    no pixel moving further than twice the frame's long side)."""
    height, width = int(shape[0]), int(shape[1])
    expected = height * width * 2 * 4
    try:
        if path.stat().st_size > expected + (64 << 10):
            return None, "is larger than a flow of these frames can be"
        with zipfile.ZipFile(path) as archive:
            with archive.open("flow.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                declared, _, dtype = read_header(member)  # the header only: nothing is allocated
            if tuple(declared) != (height, width, 2) or np.dtype(dtype) != np.float32:
                return None, f"declares a {dtype} array of shape {tuple(declared)}, not ({height}, {width}, 2)"
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != key:
                    return None, "belongs to other frames"
                flow = np.asarray(data["flow"], dtype=np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None, "is unreadable"
    if not np.isfinite(flow).all():
        return None, "holds values that are not finite (NaN or inf)"
    if float(np.abs(flow).max(initial=0.0)) > 2 * max(height, width):
        return None, "moves pixels further than the frame is wide"
    return flow, ""


#: How hard a fixed later result pulls (``Ahead``): 1 spreads the difference evenly over the frames before it if
#: each frame converged; with a video's few steps a frame moves less than that. Pulls of 1, 2 and 3 left joins 2.9x,
#: 2.0x and 1.7x the warping error within chunks (bench/reports/cpu-2core-video-joins).
AHEAD_PULL = 3.0


@dataclass(frozen=True)
class Ahead:
    """A later frame whose result is already fixed (on a cluster, the next chunk's key), ``remaining`` frames after
    the one being made: the frames before it are drawn toward it a step at a time so that it is reached without a
    jump. Held with ``AHEAD_PULL``/``remaining`` of its certainty beside the previous frame's weight (at a pull of
    1, each frame covers 1/``remaining`` of what is left of the difference, spreading it evenly), and the start
    moves ``AHEAD_PULL``/(``remaining`` + ``AHEAD_PULL``) of the way to it."""

    content: np.ndarray  # (H, W, 3) uint8
    result: np.ndarray  # (H, W, 3) float32 in [0, 1]
    remaining: int


def guide(
    content: np.ndarray,
    earlier: Sequence[tuple[np.ndarray, np.ndarray]],
    flows: FlowCache,
    ahead: Ahead | None = None,
) -> Guide:
    """The temporal guide of a frame: ``content`` (H, W, 3) uint8, and ``earlier`` as (content frame, result
    (H, W, 3) float32 in [0, 1]) pairs, nearest first; and a later fixed result to arrive at (``Ahead``)."""
    warped, sure = [], []
    for frame, result in earlier:
        forward, backward = flows.pair(frame, content)
        warped.append(warp(result, backward, RESULT_INTERPOLATION))
        sure.append(certainty(forward, backward))
    weights = long_term(sure)
    start = new_pixel_start(content, warped[0], sure[0])
    init = warped[0] * sure[0][..., None] + start * (1.0 - sure[0][..., None])
    if ahead is not None:
        if ahead.remaining < 1:
            raise ValueError(f"a later frame is 1 or more frames ahead, not {ahead.remaining}")
        forward, backward = flows.pair(ahead.content, content)
        there, sure_there = warp(ahead.result, backward, RESULT_INTERPOLATION), certainty(forward, backward)
        warped.append(there)
        weights.append(sure_there * (AHEAD_PULL / ahead.remaining))
        share = (sure_there * (AHEAD_PULL / (ahead.remaining + AHEAD_PULL)))[..., None]
        init = init * (1.0 - share) + there * share
    return Guide(warped, weights, init.astype(np.float32))


def pair_warping_errors(
    outputs: Sequence[np.ndarray], contents: Sequence[np.ndarray], flows: FlowCache
) -> dict[int, float]:
    """Frame t -> mean |O_t - warp(O_t-1)| where the (unblurred) certainty is 1, with the flow of the content
    frames; outputs (H, W, 3) float in [0, 1]. Frames with no sure pixel are left out."""
    errors: dict[int, float] = {}
    for t in range(1, len(outputs)):
        forward, backward = flows.pair(contents[t - 1], contents[t])
        sure = certainty(forward, backward, blur=False) > 0.5
        if not sure.any():
            continue
        diff = np.abs(outputs[t] - warp(outputs[t - 1], backward)).mean(axis=-1)
        errors[t] = float(diff[sure].mean())
    return errors


def warping_error(outputs: Sequence[np.ndarray], contents: Sequence[np.ndarray], flows: FlowCache) -> float:
    """The flicker metric of Ruder et al.: the mean over consecutive frames of ``pair_warping_errors``."""
    errors = list(pair_warping_errors(outputs, contents, flows).values())
    return float(np.mean(errors)) if errors else 0.0
