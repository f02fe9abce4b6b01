"""Every registered scheme converts a tiny model; tests pick up new registry entries."""

import numpy as np
import pytest

from quantbench.techniques.convert import convert_all
from quantbench.measure.litert import io_dtypes
from quantbench.techniques.schemes import SCHEMES
from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def conversions(tmp_path_factory):
    import tf_keras as keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(256, activation="relu")(x)  # weights dominate the file size
    x = keras.layers.Dense(256, activation="relu")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    out = tmp_path_factory.mktemp("schemes")
    # A conversion that needs a search (selective) converts here with its result given.
    specs = [SCHEMES[n].name if not SCHEMES[n].needs_search else
             SCHEMES.get(n).name + ":denylist=[]" for n in SCHEMES.names()]  # fmt: skip
    return {c.scheme: c for c in convert_all(model, specs, calibration, out)}


# Schemes made from the float32 .tflite (AEQ's): every variant their entry lists.
FROM_TFLITE = [spec for entry in SCHEMES if entry.source == "tflite" for spec in entry.default_specs()]


@pytest.fixture(scope="module")
def from_tflite(tmp_path_factory):
    """The tiny model through convert_all with the tflite-sourced variants only: the float32
    file they start from is converted for them, and is no output."""
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    out = tmp_path_factory.mktemp("from-tflite")
    return out, convert_all(tiny_classifier(), FROM_TFLITE, calibration, out)


@pytest.mark.parametrize("index", range(len(FROM_TFLITE)), ids=[SCHEMES.slug_of(s) for s in FROM_TFLITE])
def test_every_scheme_made_from_a_tflite_converts(from_tflite, index):
    out, conversions = from_tflite
    assert len(conversions) == len(FROM_TFLITE)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{SCHEMES.slug_of(s)}.tflite" for s in FROM_TFLITE)
    spec, conversion = FROM_TFLITE[index], conversions[index]
    assert conversion.error is None, conversion.error
    assert conversion.path.name == f"{SCHEMES.slug_of(spec)}.tflite" and conversion.seconds > 0
    recipe = SCHEMES.params_of(spec).recipe
    expected = {"static_wi8_ai8": "int8", "static_wi8_ai16": "int16"}.get(recipe, "float32")
    assert io_dtypes(conversion.path) == (expected, expected)


@pytest.mark.parametrize("name", SCHEMES.names())
def test_every_scheme_converts(conversions, name):
    conversion = conversions[name]
    assert conversion.error is None, conversion.error
    assert conversion.path.is_file() and conversion.seconds > 0
    expected_io = "int8" if SCHEMES[name].io_dtype == "int8" else "float32"
    assert io_dtypes(conversion.path) == (expected_io, expected_io)


def test_sizes_shrink_as_expected(conversions):
    size = {name: c.path.stat().st_size for name, c in conversions.items()}
    assert 3.0 < size["float32"] / size["dynamic_range"] < 4.5
    assert 3.0 < size["float32"] / size["int8"] < 4.5
    assert 1.7 < size["float32"] / size["float16"] < 2.2


def test_deprecated_aliases_are_marked_identical_to_default(conversions):
    assert conversions["dynamic_range"].identical_to is None
    assert conversions["optimize_for_size"].identical_to == "dynamic_range"
    assert conversions["optimize_for_latency"].identical_to == "dynamic_range"


def test_failed_conversion_is_recorded_not_raised(tmp_path):
    import tf_keras as keras

    class Opaque(keras.layers.Layer):  # a TF op with no TF Lite builtin
        def call(self, x):
            import tensorflow as tf

            return tf.strings.to_number(tf.strings.as_string(x))

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Opaque()(inputs)))
    calibration = np.zeros((2, 4), np.float32)
    results = convert_all(model, ["float32", "int8"], calibration, tmp_path, workers=1)
    assert all(r.error for r in results)
    assert all(r.path is None for r in results)
    assert "AsString" in results[0].error or "as_string" in results[0].error.lower()


def test_unknown_scheme_has_a_hint():
    from quantbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'float16'"):
        SCHEMES.get("flaot16")


def test_tiny_classifier_fixture_is_flat():
    import tf_keras as keras

    model = tiny_classifier()
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)


def test_a_converter_crash_or_hang_costs_one_scheme_not_the_run(tmp_path, worker_ops):
    """A worker that dies or hangs mid-way: its scheme fails, the rest run in a new worker."""
    from quantbench.techniques import converter as convert

    names = ["float32", "crash", "int8", "hang", "float16"]
    jobs = [({"name": n, "params": {}}, tmp_path / f"{n}.tflite") for n in names]
    finished = []
    outcomes = convert.convert_saved_model("fake", jobs, None, workers=1, timeout=2,
                                           on_done=lambda path, outcome: finished.append(path))  # fmt: skip
    assert finished == [str(path) for _, path in jobs]  # one worker: in order
    for name in ("float32", "int8", "float16"):
        assert outcomes[str(tmp_path / f"{name}.tflite")] == (0.5, None)
        assert (tmp_path / f"{name}.tflite").read_bytes() == name.encode()
    crashed = outcomes[str(tmp_path / "crash.tflite")][1]
    assert crashed == "converter process failed (killed by SIGSEGV): converter: about to crash"
    hung = outcomes[str(tmp_path / "hang.tflite")][1]
    assert hung == "converter process failed (no answer in 2 s)"



def test_a_failed_conversion_counts_its_own_seconds_not_its_wait_in_the_queue(tmp_path, worker_ops):
    """One worker: "hang" waits 1.5 s behind "slow", then fails at its 2 s timeout. Its
    seconds are the 2 s it ran (they were 3.5+ when counted from its submission)."""
    from quantbench.techniques import converter as convert

    jobs = [({"name": n, "params": {}}, tmp_path / f"{n}.tflite") for n in ("slow", "hang")]
    outcomes = convert.convert_saved_model("fake", jobs, None, workers=1, timeout=2)
    seconds, error = outcomes[str(tmp_path / "hang.tflite")]
    assert error == "converter process failed (no answer in 2 s)"
    assert 2.0 <= seconds < 3.2

def test_convert_all_reports_progress_and_prints_nothing(tmp_path, capfd):
    import tf_keras as keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    calibration = np.zeros((2, 8, 8, 3), np.float32)
    seen = []
    conversions = convert_all(model, ["float32", "dynamic_range"], calibration, tmp_path,
                              prefix="qat_", workers=1,
                              on_progress=lambda name, c: seen.append((name, c.error)))  # fmt: skip
    assert sorted(seen) == [("qat_dynamic_range", None), ("qat_float32", None)]
    assert [c.path.name for c in conversions] == ["qat_float32.tflite", "qat_dynamic_range.tflite"]
    out, err = capfd.readouterr()
    assert out == "" and "converting" not in err  # (TensorFlow's own start-up lines aside)
