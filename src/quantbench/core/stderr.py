"""Native libraries' chatter kept off the user's terminal, without hiding a real error.

TensorFlow logs through absl before logging is initialised, and LiteRT announces every XNNPACK
delegate it creates (`INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`) on file
descriptor 2, where no Python logging setting reaches. `filtered_stderr` points descriptor 2
at a temporary file while a block runs, then replays every line that is not known noise.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

LITERT_NOISE = re.compile(r"^INFO: (Created|Initialized) TensorFlow Lite")


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern[str]) -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not noise.search(line):
                    print(line, file=sys.stderr)
