"""One exception family. Every message says what went wrong and how to fix it, in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class StyleTransferError(Exception):
    """Base class of every error the engine raises on purpose; the CLI prints it as one red line."""

    exit_code = 1


class ImageError(StyleTransferError):
    """An input image is missing, unreadable, corrupt, too large or too small."""


class WeightsError(StyleTransferError):
    """Network weights are missing, corrupt or of the wrong shape."""


class LayerError(StyleTransferError):
    """A layer name is unknown or a layer selection is empty."""


class ModelError(StyleTransferError):
    """An ONNX model file does not fit what the engine needs."""


class ExportValidationError(ModelError):
    """An exported ONNX model disagrees with the torch module it came from."""

    def __init__(self, message: str, max_abs: float, max_rel: float) -> None:
        super().__init__(message)
        self.max_abs = max_abs
        self.max_rel = max_rel


class ProviderError(StyleTransferError):
    """An ONNX Runtime execution provider or a torch device is not available."""


class ConfigError(StyleTransferError):
    """Settings that cannot work together, or out of range."""


class ResourceError(StyleTransferError):
    """A run that would not fit in memory."""


class NumericalError(StyleTransferError):
    """The optimisation produced non-finite values and could not recover; ``image`` is the last good one."""

    def __init__(self, message: str, image: object = None, step: int = 0) -> None:
        super().__init__(message)
        self.image = image
        self.step = step


def did_you_mean(given: str, known: Iterable[str]) -> str:
    """ " did you mean 'x'?" for the nearest known name, or ""."""
    close = difflib.get_close_matches(given, list(known), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""
