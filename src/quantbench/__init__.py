"""quantbench: which TF Lite variant of your Keras model should you ship?

Importing this package selects Keras 2 (tf_keras) for TensorFlow, because
tensorflow-model-optimization only works with Keras 2. This is the one place where
that happens, and it must run before TensorFlow is first imported.
"""

from __future__ import annotations

import os as _os
import sys as _sys

_os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise for a CLI user.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in _sys.modules and "tf_keras" not in _sys.modules:  # pragma: no cover
    import warnings as _warnings

    _warnings.warn(
        "TensorFlow was imported before quantbench; import quantbench first (or set "
        "TF_USE_LEGACY_KERAS=1) so that tf.keras is Keras 2, which QAT requires.",
        stacklevel=2,
    )

from quantbench.core.version import __version__  # noqa: E402 - after the Keras switch

__all__ = ["__version__", "quantize", "recommend", "run"]


def __getattr__(name: str):
    # Lazy, so `import quantbench` stays light (no pydantic models, no TensorFlow).
    if name in ("run", "quantize", "recommend"):
        from quantbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'quantbench' has no attribute {name!r}")
