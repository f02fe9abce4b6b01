"""Per-layer analysis and selective quantization on a tiny model with one planted outlier.

The outlier is a depthwise conv whose channel 0 has weights -1000 on non-negative inputs and
a ReLU after it: that channel always outputs 0 (the model's function is unchanged), but one
per-tensor weight scale (1000/127) then rounds every other channel's weights to 0, so the
per-tensor int8 model loses its features there, as MobileNetV2's folded depthwise layers do.
"""

from __future__ import annotations

import numpy as np
import pytest

from quantbench.techniques.selective import next_points

OUTLIER = "outlier_dw"


def _images(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class c: channel c brighter (an easy task the tiny model learns in seconds)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.uniform(0.0, 0.5, (n, size, size, 3)).astype(np.float32)
    images[np.arange(n), :, :, labels] += 0.5
    return images, labels


@pytest.fixture(scope="module")
def planted():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name=OUTLIER)(x)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="planted")
    model.compile("adam", "sparse_categorical_crossentropy")
    train, labels = _images(600, 1)
    model.fit(train, labels, epochs=15, batch_size=32, verbose=0)
    kernel, bias = model.get_layer(OUTLIER).get_weights()
    kernel[:, :, 0, :] = -1000.0  # channel 0: dead after the ReLU, and one huge weight range
    bias[0] = min(bias[0], 0.0)
    model.get_layer(OUTLIER).set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def searched(planted):
    from quantbench.techniques.schemes import SCHEMES

    calibration, _ = _images(64, 2)
    search_images, search_labels = _images(200, 3)
    float_accuracy = float(np.mean(planted.predict(search_images, verbose=0).argmax(1) == search_labels))
    spec = SCHEMES.spec("selective", base="int8_per_tensor")
    resolved, trace, analysis = __import__("quantbench.techniques.selective", fromlist=["search"]).search(
        planted, spec, calibration, search_images, search_labels, float_accuracy, budget=3.0,
        workers=2, latency=False,
    )  # fmt: skip
    return resolved, trace, analysis, float_accuracy


@pytest.mark.slow
def test_the_analysis_ranks_the_planted_layer_first_by_its_keras_name(searched):
    _, _, analysis, _ = searched
    assert analysis.layers[0].layer == OUTLIER
    assert analysis.layers[0].rmse_scale > 5 * analysis.layers[1].rmse_scale
    assert analysis.named_fraction == 1.0
    assert [e.rank for e in analysis.layers] == list(range(1, len(analysis.layers) + 1))


@pytest.mark.slow
def test_the_search_keeps_exactly_the_planted_layer_in_float(searched):
    resolved, trace, _, float_accuracy = searched
    assert trace.float_layers == [OUTLIER]
    assert resolved.params["denylist"] == trace.float_nodes and len(trace.float_nodes) == 1
    plain = next(c for c in trace.candidates if c.float_layers == 0)
    assert plain.search_accuracy < float_accuracy - 0.2  # the planted layer breaks per-tensor int8
    assert trace.within_budget and trace.conversions <= 12


@pytest.mark.slow
def test_a_plain_base_within_the_budget_is_the_answer_after_one_candidate(planted):
    """A budget the plain per-tensor model already meets: no layer kept in float, and the
    search stops after k = 0 (no k = all, no bisection)."""
    from quantbench.techniques.selective import search
    from quantbench.techniques.schemes import SCHEMES

    calibration, _ = _images(64, 2)
    images, labels = _images(100, 5)
    resolved, trace, _ = search(planted, SCHEMES.spec("selective"), calibration, images, labels,
                                float_accuracy=0.0, budget=1.0, workers=2, latency=False)  # fmt: skip
    assert trace.float_layers == [] and resolved.params["denylist"] == []
    assert [c.float_layers for c in trace.candidates] == [0] and trace.within_budget


@pytest.mark.slow
def test_per_tensor_int8_converts_and_keeps_one_scale_per_weight_tensor(planted, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from quantbench.techniques.convert import convert_all

    calibration, _ = _images(32, 4)
    (conversion,) = convert_all(planted, ["int8_per_tensor"], calibration, tmp_path)
    assert conversion.error is None
    details = Interpreter(model_path=str(conversion.path)).get_tensor_details()
    weights = [d for d in details if d["name"].endswith(("Conv2D", "depthwise", "MatMul"))
               and d["dtype"] == np.int8]  # fmt: skip
    assert weights and all(len(d["quantization_parameters"]["scales"]) == 1 for d in weights)


@pytest.mark.parametrize("lo,hi,width", [(0, 66, 2), (3, 15, 2), (7, 9, 2), (0, 1, 2), (0, 5, 1)])
def test_next_points_fall_strictly_between_and_shrink_the_interval(lo, hi, width):
    points = next_points(lo, hi, width)
    if hi - lo <= 1:
        assert points == []
    else:
        assert points and all(lo < k < hi for k in points) and len(points) <= width


@pytest.mark.realdata
@pytest.mark.slow
def test_per_tensor_analysis_of_mobilenet_on_real_photos_names_its_layers(real_keras_home, monkeypatch):
    """MobileNetV2 (ImageNet trunk) on real flowers: every quantized op carries its Keras layer,
    and the worst per-tensor op is a depthwise conv (folded batch norm's per-channel ranges)."""
    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    from quantbench.techniques.layers import analyze
    from quantbench.core.config import DataConfig, ModelConfig
    from quantbench.ml.data import load_dataset
    from quantbench.ml.model import build_classifier
    from quantbench.ml.preprocess import Preprocessing
    from quantbench.techniques.schemes import SCHEMES

    data = DataConfig(dir=real_keras_home / "datasets" / "flower_photos", image_size=96,
                      max_images_per_class=6)  # fmt: skip
    images = Preprocessing(96, data.scaling, data.channel_order).scale(load_dataset(data).train_images)
    model = build_classifier(5, ModelConfig(alpha=0.35), 96)
    analysis = analyze(model, SCHEMES.spec("int8_per_tensor"), images[:16], images[:8])
    assert len(analysis.layers) > 50 and analysis.named_fraction >= 0.95
    assert analysis.layers[0].op == "DEPTHWISE_CONV_2D" and "depthwise" in analysis.layers[0].layer
    assert analysis.layers[0].rmse_scale > 2 * 0.29


@pytest.mark.pipeline
@pytest.mark.realdata
@pytest.mark.slow
def test_selective_run_on_real_photos_searches_on_photos_held_out_of_training(real_keras_home, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    """The smoke preset on real flowers with per-tensor int8 and its selective version: the
    search scores photos neither trained on nor reported, and its variant is measured like
    any other on the untouched validation split."""
    import json

    import quantbench

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    frame, run_dir = quantbench.run(
        "smoke", output_dir=str(tmp_path / "runs"), data__max_images_per_class=40,
        schemes=["int8_per_tensor", "selective:search_images=40:max_candidates=4"],
        targets__check=False,
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    data = results["data"]
    assert data["search_count"] == 40 and data["train_count"] + data["search_count"] + data["val_count"] == 200
    row = next(v for v in results["variants"] if v["scheme"] == "selective")
    assert row["status"] == "ok" and row["eval_images"] == data["val_count"]
    trace = row["selective"]
    assert trace["search_images"] == 40 and "held out of training" in trace["search_source"]
    assert 2 <= trace["conversions"] <= 4 and trace["candidates"][0]["float_layers"] == 0
    assert len(trace["float_layers"]) == len(trace["float_nodes"]) < trace["quantizable_layers"]
    assert all(trace["float_layers"])  # each named by its Keras layer
    analysis = next(a for a in results["layer_analyses"] if a["variant"] == "int8_per_tensor")
    assert analysis["named_fraction"] >= 0.95
    assert set(frame["variant"]) >= {"keras_float", "int8_per_tensor", row["variant"]}


@pytest.mark.pipeline
@pytest.mark.slow
def test_analyze_on_a_finished_selective_run_calibrates_as_the_run_did(tmp_path, monkeypatch):
    """`quantbench analyze RUN_DIR` re-reads the run's photos: it must hold the search photos
    out again, or its calibration slice (hence every op's output scale) is not the run's."""
    import json

    import quantbench
    from quantbench.commands.analyze import analyze_run
    from tests.conftest import make_image_folder

    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    photos = make_image_folder(tmp_path / "photos", per_class=16, size=40)
    _, run_dir = quantbench.run(
        "smoke", output_dir=str(tmp_path / "runs"), data__dir=str(photos), data__image_size=32,
        model__weights="none", data__max_images_per_class=None, targets__check=False,
        evaluate__threads=[1], evaluate__latency_runs=3, convert__calibration_images=8,
        schemes=["int8_per_tensor", "selective:search_images=10:max_candidates=3"],
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["search_count"] == 10
    searched = {e["tensor"]: e["scale"] for e in results["layer_analyses"][0]["layers"]}
    again = analyze_run(run_dir, ["int8_per_tensor"])
    rescored = {e.tensor: e.scale for e in again.layer_analyses[0].layers}
    assert rescored.keys() == searched.keys() and len(searched) >= 3
    assert all(rescored[t] == pytest.approx(searched[t], rel=1e-6) for t in searched)
    assert (run_dir / "layers-int8_per_tensor.csv").is_file()
