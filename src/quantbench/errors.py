"""The small exception hierarchy. The CLI turns any of these into `ERROR ...` plus a tip, exit 2."""

from __future__ import annotations


class QuantbenchError(Exception):
    """A problem the user can fix: bad input, bad config, a missing file."""

    exit_code = 2

    def __init__(self, message: str, tip: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tip = tip


class ConfigError(QuantbenchError):
    """A config value, flag or preset is invalid."""


class DataError(QuantbenchError):
    """The image folder is missing, empty or unusable."""


class ModelError(QuantbenchError):
    """A model or its weights cannot be built, found or loaded."""


class ConversionError(QuantbenchError):
    """A model cannot be converted to TF Lite at all (single schemes are recorded, not raised)."""


class DependencyError(QuantbenchError):
    """An optional dependency is not installed."""


class StoreError(QuantbenchError):
    """The machine cannot read or write the model cache (permissions, read-only, disk full)."""
