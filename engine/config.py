"""Every setting of a stylization run in one frozen dataclass, each declared once.

A field's declaration holds its default, its help text, its ``--help`` group and its range; its choices are its
``Literal`` type. ``validate`` checks every field from those declarations, then what fields must agree on, with
one message per problem. The CLI builds its options from the same declarations (``engine.cli.options``), so a
new setting is one field here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from nst_engine.errors import ConfigError, did_you_mean
from nst_engine.layers import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_STYLE_LAYERS,
    Normalization,
    Pooling,
    StyleLossKind,
    deepest,
    min_input_size,
    parse_layers,
)
from nst_engine.losses.registry import STYLE_LOSSES

Optimizer = Literal["lbfgs", "adam"]
Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
ColorMode = Literal["none", "luminance", "histogram"]
Device = Literal["auto", "cpu", "cuda"]
CudaGraph = Literal["auto", "on", "off"]
FeatureUnits = Literal["normalized", "raw"]
Init = str  # "content", "random", "mean" or an image path
TvNorm = Literal["l2", "l1", "l1-sum"]
#: --init values that are not image paths.
NAMED_INITS = ("content", "random", "mean")

#: Learning rates that suit each optimiser when --lr is not given (pixels are in [0, 1]).
DEFAULT_LR: dict[str, float] = {"lbfgs": 1.0, "adam": 0.02}
#: Steps of a run when --steps is not given: at its one scale, or at the first of an automatic coarse-to-fine plan.
DEFAULT_STEPS = 500
#: Without --scales: one scale below this size; from it on, coarse to fine from about AUTO_FIRST_SIDE px
#: (bench/reports/cpu-2core-print).
AUTO_COARSE_FROM = 1000
AUTO_FIRST_SIDE = 512
#: The smoothness weight of each --tv-norm when --tv-weight is not given (units differ: squared, absolute, summed).
DEFAULT_TV_WEIGHT: dict[str, float] = {"l1": 0.1, "l2": 1e-3, "l1-sum": 1e-3}

#: ``--help`` groups of the stylize command.
LOSS, OPTIMISATION, IO, CONTROLS, RUNTIME = "Loss", "Optimisation", "Inputs and outputs", "Quality controls", "Runtime"
#: Knobs for speed that a first run never needs.
ADVANCED = "Advanced runtime"
#: What a user sets first: the first panel of --help.
MAIN = "Main options"


@dataclass(frozen=True)
class Setting:
    """How one field is shown and checked: help text, group, and an inclusive ``low`` / exclusive ``above``
    lower bound and inclusive ``high`` upper bound (None: no bound)."""

    help: str
    group: str
    low: float | None = None
    above: float | None = None
    high: float | None = None
    shown_default: str | None = None  # what --help shows when the field's default is not the value used
    choices: tuple[str, ...] = ()  # the allowed values of a str field named by a registry rather than a Literal


def setting(default: Any, help: str, group: str, **bounds: Any) -> Any:
    """A StyleConfig field declared with its default, help text, group and bounds (see ``Setting``)."""
    return field(default=default, metadata={"setting": Setting(help, group, **bounds)})


@functools.cache
def settings(of: type | None = None) -> dict[str, tuple[dataclasses.Field[Any], Setting, Any]]:
    """Every declared setting of a settings dataclass (``StyleConfig`` when none is named): name -> (field,
    declaration, resolved type)."""
    cls = StyleConfig if of is None else of
    hints = typing.get_type_hints(cls)
    return {
        f.name: (f, f.metadata["setting"], hints[f.name]) for f in dataclasses.fields(cls) if "setting" in f.metadata
    }


def allowed_values(name: str, of: type | None = None) -> tuple[str, ...]:
    """The values setting ``name`` accepts: its declared choices, or its ``Literal`` type's; () when any."""
    _, spec, kind = settings(of)[name]
    return spec.choices or choices(kind)


def check_declared(values: Any) -> None:
    """Every declared field of a settings dataclass against its declaration (``check_value``)."""
    kind: type = type(values)
    for name in settings(kind):
        check_value(name, getattr(values, name), kind)


def choices(kind: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` type (or of ``Literal | None``); () for any other type."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next((c for c in map(choices, typing.get_args(kind)) if c), ())
    return tuple(typing.get_args(kind)) if typing.get_origin(kind) is Literal else ()


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def fits(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the declared type ``kind`` (int, float, str, bool, Literal, tuple[X, ...], unions):
    a value read from a file (a checkpoint, a page's JSON) is checked as strictly as the command line parses."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return isinstance(value, (str, int)) and value in args
    if origin is tuple:
        return isinstance(value, tuple) and all(fits(v, args[0]) for v in value)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def _kind_words(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind_words(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        return "a list of " + {int: "whole numbers", float: "numbers", str: "names"}.get(args[0], "values")
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(
        kind, "nothing" if kind is type(None) else getattr(kind, "__name__", str(kind))
    )


def check_value(name: str, value: Any, of: type | None = None) -> None:
    """One setting's value against its declaration: its type, finite, one of its choices, inside its bounds."""
    _, spec, kind = settings(of)[name]
    flag = option_name(name)
    allowed = allowed_values(name, of)
    if not fits(value, kind) and not allowed:
        raise ConfigError(f"{flag} must be {_kind_words(kind)}, not {value!r}"[:200])
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{flag} must be a finite number, not {v}")
    if allowed and value is not None and value not in allowed:
        hint = did_you_mean(str(value), map(str, allowed))
        raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, not '{value}';{hint or ' pick one of those'}")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if spec.low is not None and v < spec.low:
            raise ConfigError(f"{flag} must be {spec.low:g} or more, not {v}")
        if spec.above is not None and v <= spec.above:
            raise ConfigError(f"{flag} must be above {spec.above:g}, not {v}")
        if spec.high is not None and v > spec.high:
            raise ConfigError(f"{flag} must be {spec.high:g} or less, not {v}")


def config_from_record(values: Any, where: str) -> StyleConfig:
    """Settings read back from a file (a checkpoint's record): every key known, every value through the same
    checks as the command line; lists become tuples as JSON loses them."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} records no settings; it is damaged")
    known = settings()
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(
            f"{where} records a setting this version does not know ({unknown[0][:40]!r}); it was made by another "
            "version of nst-engine: rerun the original command instead"
        )
    given: dict[str, Any] = {str(k): tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return StyleConfig(**given)
    except ConfigError as exc:
        raise ConfigError(f"{where} records a bad setting: {exc}") from None


#: The smallest --size: the stride of VGG's deepest layers (relu5_x sees 1x1 at 16 px).
MIN_SIZE = 16


@dataclass(frozen=True)
class StyleConfig:
    """Settings of one stylization. Tensors never live here: this is what a trace records."""

    # One minimum for every front door: 16 px is the deepest layer's stride, so any layer set fits.
    size: int = setting(512, "Output long side in px.", MAIN, low=MIN_SIZE)
    style_scale: float = setting(1.0, "Style image size relative to --size.", IO, above=0)
    max_input_pixels: int = setting(8192 * 8192, "Refuse larger inputs (read from the file header).", IO, low=1)
    content_layers: tuple[str, ...] = setting(DEFAULT_CONTENT_LAYERS, "Content layers, comma-separated.", LOSS)
    style_layers: tuple[str, ...] = setting(DEFAULT_STYLE_LAYERS, "Style layers, comma-separated.", LOSS)
    style_layer_weights: tuple[float, ...] | None = setting(
        None, "One weight per style layer, e.g. 1,1,2,2,1 (normalised).", LOSS, low=0, shown_default="equal"
    )
    content_weight: float = setting(1.0, "Weight of the content loss.", MAIN, low=0)
    # jcjohnson/neural-style's 100 : 5 on a Caffe VGG, in normalised units (bench/reports/cpu-2core-real-defaults).
    style_weight: float = setting(3e6, "Weight of the style loss.", MAIN, low=0)
    # l1 at 0.1 since issue 33: it leaves no grain from a noise start, and from the photo it scores as well as l2 at
    # 1e-3 did (bench/reports/cpu-2core-grain).
    tv_weight: float | None = setting(
        None, "Total variation (smoothness) weight.", LOSS, low=0, shown_default="0.1 for l1, 1e-3 for l2 and l1-sum"
    )
    tv_norm: TvNorm = setting(
        "l1",
        "Smoothness term: l2 (mean squared neighbour difference), l1 (mean absolute: removes speckle, keeps edges) "
        "or l1-sum (jcjohnson's: summed absolute differences of 0-255 pixels).",
        LOSS,
    )
    style_blend_weights: tuple[float, ...] | None = setting(
        None, "One weight per --style, e.g. 3,7 (normalised).", LOSS, low=0, shown_default="equal"
    )
    style_loss: StyleLossKind = setting(
        "gram",
        "; ".join(f"{name}: {entry.help}" for name, entry in STYLE_LOSSES.items()) + ".",
        LOSS,
        choices=tuple(STYLE_LOSSES),
    )
    sw_projections: int = setting(
        64, "Random directions per style layer for --style-loss sliced.", LOSS, low=1, high=4096
    )
    sw_redraw: int = setting(
        0, "Draw fresh --style-loss sliced directions every N steps (0: the same all run).", LOSS, low=0
    )
    pooling: Pooling = setting("max", "max, or avg (scaled to keep activation magnitudes).", LOSS)
    normalization: Normalization = setting("mean", "How Gram terms are scaled: mean, or gatys (the paper's).", LOSS)
    normalize_gradients: bool = setting(False, "Divide each term's gradient by its L1 norm.", LOSS)
    # "normalized": losses on features divided by the model's measured feature scale, so that one set of loss
    # weights balances under torchvision (RGB, about -2..2) and caffe (BGR, 0-255) input; "raw": on the network's
    # own features, as the reference implementations whose weights the presets copy.
    feature_units: FeatureUnits = setting(
        "normalized",
        "normalized: losses on features divided by the model's measured feature scale, so the default weights "
        "suit torchvision and caffe weights alike; raw: on the network's own features, as the presets' sources.",
        LOSS,
    )
    optimizer: Optimizer = setting("lbfgs", "lbfgs or adam.", OPTIMISATION)
    lr: float | None = setting(
        None,
        "Learning rate (L-BFGS: scales the trust region).",
        OPTIMISATION,
        above=0,
        shown_default="1 for lbfgs, 0.02 for adam",
    )
    # Each curvature pair costs 2 * 3 * H * W floats.
    lbfgs_history: int = setting(30, "L-BFGS curvature pairs kept.", OPTIMISATION, low=1)
    steps: int | None = setting(
        None, "Steps at the final scale.", MAIN, low=0, shown_default="500; fewer above 1000 px, see --scales"
    )
    init: Init = setting(
        "content",
        "content, random (uniform noise), mean (the ImageNet mean colour and faint noise, jcjohnson's "
        "-init random) or an image path.",
        OPTIMISATION,
    )
    seed: int = setting(0, "Same seed + device = same output bytes on CPU.", OPTIMISATION, low=0, high=2**63 - 1)
    scales: int | None = setting(
        None,
        "Coarse-to-fine levels, each --scale-factor the last, ending at --size.",
        CONTROLS,
        low=1,
        shown_default=f"auto: 1 below {AUTO_COARSE_FROM} px; above, enough for a first scale of {AUTO_FIRST_SIDE} px "
        "or less",
    )
    scale_factor: float = setting(2.0, "Size ratio between successive scales.", CONTROLS, above=1)
    scale_steps: int | None = setting(
        None, "Steps at each coarser scale.", CONTROLS, low=0, shown_default="steps/2; auto: equal time per scale"
    )
    preserve_colors: ColorMode = setting("none", "none, luminance or histogram.", CONTROLS)
    device: Device = setting("auto", "Torch device for the optimisation: auto, cpu, cuda.", RUNTIME)
    precision: Precision = setting(
        "auto",
        "auto (bf16 where the hardware computes it natively: CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX; "
        "else fp32), fp32, tf32 (CUDA), bf16 or fp16 (CUDA). The network only: statistics, losses and pixels stay "
        "fp32; bytes differ between precisions.",
        RUNTIME,
    )
    compile: bool = setting(False, "torch.compile the network (slow start, faster steps on long GPU runs).", ADVANCED)
    # cuDNN's NHWC kernels are the fast ones on CUDA; on CPU it was faster at 512 px in the step benchmark.
    channels_last: bool = setting(True, "NHWC memory format (faster on CPU and CUDA).", ADVANCED)
    cuda_graph: CudaGraph = setting(
        "auto",
        "Capture each whole step in a CUDA graph: auto (on CUDA, checked against eager steps, falls back with the "
        "reason), on (fail if it cannot), off.",
        ADVANCED,
    )
    tile: str = setting(
        "auto",
        "Tile size in px for sizes that do not fit in memory: auto (tile only when the estimate says the size does not "
        "fit), a size such as 1024 (always tile), or off (refuse what does not fit).",
        RUNTIME,
    )
    tile_halo: int | None = setting(
        None, "Overlap around each tile in px; below the exact halo it is faster but not exact.", RUNTIME, low=0,
        shown_default="exact: the deepest layer's receptive-field radius",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("content_layers", "style_layers"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{option_name(name)} must be layer names such as relu1_1,relu2_1, not {value!r}")
        object.__setattr__(self, "content_layers", parse_layers(self.content_layers))
        object.__setattr__(self, "style_layers", parse_layers(self.style_layers))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for the first setting that cannot work: each field against its declaration, then
        what fields must agree on."""
        check_declared(self)
        smallest = min_input_size(self.layers)
        if self.size < smallest:
            raise ConfigError(
                f"--size {self.size} is below the network's minimum of {smallest} px for layer "
                f"'{deepest(self.layers)}'; use --size {smallest} or more"
            )
        self._check_tiling(smallest)
        weights = self.style_layer_weights
        if weights is not None and len(weights) != len(self.style_layers):
            raise ConfigError(
                f"--style-layer-weights has {len(weights)} values for {len(self.style_layers)} style layers; "
                "give one each"
            )
        if weights is not None and sum(weights) <= 0:
            raise ConfigError("--style-layer-weights must have a positive sum")

    def _check_tiling(self, smallest: int) -> None:
        if self.tile in ("auto", "off"):
            return
        if not self.tile.isdigit():
            raise ConfigError(f"--tile must be auto, off or a size in px such as 1024, not '{self.tile}'")
        size = int(self.tile)
        if size < smallest or size % smallest:
            raise ConfigError(
                f"--tile {size} must be a multiple of {smallest} px (the stride of layer '{deepest(self.layers)}'), "
                f"at least {smallest}; use --tile {max(smallest, size // smallest * smallest)}"
            )
        halo = self.tile_halo
        if halo is not None and (halo % smallest or halo > size):
            raise ConfigError(
                f"--tile-halo {halo} must be a multiple of {smallest} px and no larger than --tile {size}; "
                f"use --tile-halo {min(size, halo // smallest * smallest)}"
            )

    @property
    def tile_size(self) -> int | None:
        """The forced tile size, or None for auto and off."""
        return int(self.tile) if self.tile.isdigit() else None

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def layer_weights(self) -> dict[str, float]:
        """Per style layer weight, normalised to sum to 1."""
        raw = self.style_layer_weights or tuple(1.0 for _ in self.style_layers)
        total = sum(raw)
        if total <= 0:
            raise ConfigError("--style-layer-weights must have a positive sum")
        return {layer: w / total for layer, w in zip(self.style_layers, raw, strict=True)}

    @property
    def smoothness_weight(self) -> float:
        """The smoothness term's weight: ``tv_weight``, else its norm's default."""
        return self.tv_weight if self.tv_weight is not None else DEFAULT_TV_WEIGHT[self.tv_norm]

    @property
    def auto_scales(self) -> bool:
        """Whether the coarse-to-fine plan is chosen by size (``scales`` not given)."""
        return self.scales is None

    @property
    def final_steps(self) -> int:
        """Steps at the final scale: ``steps``, else 500 shared out so that each scale of the plan takes about as
        long as the first (a doubling costs 4x per step, so it gets a quarter of the steps)."""
        if self.steps is not None:
            return self.steps
        finer = len(self.scale_sizes()) - 1
        return math.ceil(DEFAULT_STEPS / self._step_cost_ratio**finer) if self.auto_scales else DEFAULT_STEPS

    @property
    def _step_cost_ratio(self) -> float:
        return self.scale_factor**2

    def level_steps(self, index: int, count: int) -> int:
        """Steps at scale ``index`` of ``count``: ``final_steps`` at the last; ``scale_steps`` if given at the others,
        else half the final scale's, or, when the plan is chosen by size, as many as take the final scale's time
        (up to 500, or ``steps`` if more)."""
        final = self.final_steps
        if index == count - 1:
            return final
        if self.scale_steps is not None:
            return self.scale_steps
        if not self.auto_scales:
            return final // 2
        return min(max(final, DEFAULT_STEPS), math.ceil(final * self._step_cost_ratio ** (count - 1 - index)))

    @property
    def scale_steps_or_default(self) -> int:
        """Steps at each coarser scale of a two-scale plan (kept for callers of the earlier API)."""
        return self.level_steps(0, 2)

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine, the last being ``size``; none below the network minimum. When
        ``scales`` is not given: one scale below ``AUTO_COARSE_FROM`` px; from there, as many as bring the first
        within (``AUTO_FIRST_SIDE`` / ``scale_factor``, ``AUTO_FIRST_SIDE``]."""
        smallest = min_input_size(self.layers)
        sizes = [self.size]
        count = self.scales if self.scales is not None else self._auto_count()
        for _ in range(count - 1):
            nxt = round(sizes[0] / self.scale_factor)
            if nxt < max(smallest, 32):
                break
            sizes.insert(0, nxt)
        return sizes

    def _auto_count(self) -> int:
        if self.size < AUTO_COARSE_FROM:
            return 1
        count, side = 1, float(self.size)
        while side > AUTO_FIRST_SIDE:
            side /= self.scale_factor
            count += 1
        return count

    def with_min_size(self, min_size: int) -> StyleConfig:
        """Enough scales that the first is at least ``min_size`` px on its long side."""
        if min_size < 1 or min_size > self.size:
            raise ConfigError(f"--min-size must be between 1 and --size ({self.size}), not {min_size}")
        scales, side = 1, float(self.size)
        while side / self.scale_factor >= min_size:
            side /= self.scale_factor
            scales += 1
        return self.replace(scales=scales)

    def replace(self, **changes: Any) -> StyleConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lr"] = self.learning_rate
        return data
