"""Import TensorFlow without its C++ start-up chatter on the user's terminal.

TensorFlow logs through absl before logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not
silence lines such as "oneDNN custom operations are on" or "Could not find cuda drivers"
(tensorflow/tensorflow#100442). While TensorFlow imports and initialises its devices, file
descriptor 2 goes to a temp file and every line that is not known chatter is replayed
(core/stderr.py), so a real error is never hidden.
"""

from __future__ import annotations

import re
import sys

from quantbench.core.stderr import filtered_stderr

_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|cudart_stub|"
    r"cuda_platform|cuInit|cuda_dnn|cuda_blas|cuda_fft|Unable to register cu|"
    r"TF-TRT Warning|computation placer already registered|rebuild TensorFlow with the "
    r"appropriate compiler flags|This TensorFlow binary is optimized"
)


class _NoRetracingWarning:
    """TensorFlow warns when a tf.function traced 5 times in a row (`... triggered
    tf.function retracing`): a run predicts with one Keras model after another (the float, QAT,
    pruned and clustered models, each its own function), so the warning is expected and says
    nothing to the user. Kept with -v."""

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def import_tensorflow(verbose: bool = False):
    """Import tensorflow and tf_keras quietly (unless verbose); returns the tf module."""
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf
        import tf_keras  # noqa: F401
    else:
        with filtered_stderr(_CHATTER):
            import tensorflow as tf
            import tf_keras  # noqa: F401

            tf.config.list_physical_devices()  # the CUDA probe logs here
    logger = tf.get_logger()
    if not verbose and not any(isinstance(f, _NoRetracingWarning) for f in logger.filters):
        logger.addFilter(_NoRetracingWarning())
    return tf
