"""What machine and library versions produced a run."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from quantbench.core.version import __version__
from quantbench.core.results import Environment


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capture() -> Environment:
    return Environment(
        quantbench=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpu_model=cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        tensorflow=_version("tensorflow"),
        tf_keras=_version("tf-keras"),
        litert=_version("ai-edge-litert"),
        tfmot=_version("tensorflow-model-optimization"),
        numpy=_version("numpy"),
    )
