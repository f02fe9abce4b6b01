"""Import TensorFlow without its C++ start-up chatter on the user's terminal.

TensorFlow logs through absl before logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not
silence lines such as "oneDNN custom operations are on" or "Could not find cuda drivers"
(tensorflow/tensorflow#100442). We send file descriptor 2 to a temp file while TensorFlow
imports and initialises its devices, then replay every line that is not known chatter, so a
real error is never hidden.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|cudart_stub|"
    r"cuda_platform|cuInit|cuda_dnn|cuda_blas|cuda_fft|Unable to register cu|"
    r"TF-TRT Warning|computation placer already registered|rebuild TensorFlow with the "
    r"appropriate compiler flags|This TensorFlow binary is optimized"
)


def import_tensorflow(verbose: bool = False):
    """Import tensorflow and tf_keras quietly (unless verbose); returns the tf module."""
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf
        import tf_keras  # noqa: F401

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
            import tf_keras  # noqa: F401

            tf.config.list_physical_devices()  # the CUDA probe logs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not _CHATTER.search(line):
                    print(line, file=sys.stderr)
    return tf
