"""Pruning, clustering and their quantization-preserving QAT on a tiny model: what the files
hold (sparsity, distinct values), that the re-wrapped PQAT/CQAT model computes what the
trained one did, and the plan's chains."""

from __future__ import annotations

import numpy as np
import pytest

from quantbench.engine.configure import resolve
from quantbench.ml.data import load_dataset
from quantbench.ml.preprocess import Preprocessing
from quantbench.techniques.transforms import TRANSFORMS, TrainJob
from tests.conftest import make_image_folder
from tests.test_qat import SIZE, flat_bn_classifier


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from quantbench.ml.train import fit

    folder = make_image_folder(tmp_path_factory.mktemp("compress") / "photos", per_class=16, size=40)
    cfg = resolve("smoke", overrides={"data.dir": str(folder), "data.image_size": SIZE,
                                      "train.epochs": 2, "train.learning_rate": 1e-2})  # fmt: skip
    dataset = load_dataset(cfg.data)
    job = TrainJob(dataset, Preprocessing(SIZE, cfg.data.scaling), cfg, seed=1, repeat=0)
    import tf_keras as keras

    keras.utils.set_random_seed(1)
    model = flat_bn_classifier(len(dataset.classes))
    fit(model, dataset, job.preprocessing, cfg.train, seed=1)
    return job, model


def _apply(name, parent, job, **params):
    spec = TRANSFORMS.spec(name, **params)
    entry = TRANSFORMS.get(name)
    return entry.apply(TRANSFORMS.params_of(spec), parent, job)


def _kernels(model):
    """Every Conv/Dense kernel variable's value (a wrapper's `kernel` attribute may hold the
    fake-quantized tensor of its last call, so read the variables)."""
    return [v.numpy() for v in model.weights
            if v.name.split(":")[0].split("/")[-1] in ("kernel", "depthwise_kernel")]  # fmt: skip


def _per_channel_unique(kernel) -> int:
    """The most distinct values in one output channel (the kernel's last axis)."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    return max(len(np.unique(flat[:, c])) for c in range(flat.shape[1]))


def test_prune_reaches_the_target_sparsity_in_every_kernel(job):
    job, model = job
    pruned, training = _apply("prune", model, job, sparsity=0.6, epochs=2)
    assert training.recipe == "prune" and len(training.epochs) == 2
    for kernel in _kernels(pruned):
        assert np.mean(kernel == 0) == pytest.approx(0.6, abs=0.02)
    assert all(np.mean(k == 0) < 0.1 for k in _kernels(model))  # the parent is untouched
    assert [w.shape for w in pruned.get_weights()] == [w.shape for w in model.get_weights()]


def test_cluster_leaves_at_most_k_values_per_kernel(job):
    job, model = job
    clustered, _ = _apply("cluster", model, job, clusters=5, epochs=1)
    counts = [len(np.unique(k)) for k in _kernels(clustered)]
    assert max(counts) <= 5 and min(counts) >= 2


@pytest.mark.parametrize("kind", ["pqat", "cqat", "pcqat"])
def test_preserving_qat_keeps_structure_and_rewrap_is_the_same_function(job, kind, monkeypatch):
    from quantbench.ml import compress

    job, model = job
    params = {"pqat": {"sparsity": 0.5}, "cqat": {"clusters": 6},
              "pcqat": {"sparsity": 0.5, "clusters": 6}}[kind]  # fmt: skip
    spec = TRANSFORMS.spec(kind, epochs=1, **params)
    parent = model
    for step in TRANSFORMS.get(kind).chain(spec)[:-1]:
        parent, _ = TRANSFORMS.get(step.name).apply(TRANSFORMS.params_of(step), parent, job)
    captured = {}
    original = compress.rewrap

    def keep(trained, *args, **kwargs):
        captured["trained"] = trained
        return original(trained, *args, **kwargs)

    monkeypatch.setattr(compress, "rewrap", keep)
    out, training = TRANSFORMS.get(kind).apply(TRANSFORMS.params_of(spec), parent, job)
    assert training.recipe == kind
    images = job.preprocessing.scale(job.dataset.val_images[:16])
    np.testing.assert_allclose(out(images, training=False).numpy(),
                               captured["trained"](images, training=False).numpy(), atol=1e-5)  # fmt: skip
    kernels = _kernels(out)
    if "sparsity" in params:
        assert min(np.mean(k == 0) for k in kernels) >= 0.48
    if "clusters" in params:
        # CQAT trains Conv2D centroids per output channel (tfmot's get_centroids sees <= k
        # values in each channel), so the bound holds per channel; Dense stays per tensor.
        assert max(_per_channel_unique(k) for k in kernels) <= 6
    # The store loads cached weights into rebuild's model: the same variables, in order.
    rebuilt = TRANSFORMS.get(kind).rebuild(TRANSFORMS.params_of(spec), parent, job)
    rebuilt.set_weights(out.get_weights())
    np.testing.assert_allclose(rebuilt(images, training=False).numpy(),
                               out(images, training=False).numpy(), atol=1e-6)  # fmt: skip


def test_plan_puts_the_step_a_preserving_qat_continues_before_it():
    from quantbench.engine.plan import models_of, plan

    cfg = resolve("smoke", overrides={"transforms": "prune,pqat,pcqat:clusters=8",
                                      "convert.transform_schemes": ["int8"]})  # fmt: skip
    specs = plan(cfg)
    names = [s.name for s in specs]
    assert "prune50_int8" in names and "prune50_pqat_int8" in names
    assert "prune50_cluster8_pcqat_int8" in names
    models = models_of(specs)
    # prune and pqat's first step are one model (trained once).
    assert sum(1 for m in models if [t.name for t in m.transforms] == ["prune"]) == 1
    pcqat = next(m for m in models if m.transforms and m.transforms[-1].name == "pcqat")
    assert pcqat.transforms[1].params["preserve_sparsity"] is True


# --- what the file holds (filestats) --------------------------------------------------------


def _convert(model, scheme: str, tmp_path):
    return _convert_at(model, scheme, tmp_path, SIZE)


def _convert_at(model, scheme: str, tmp_path, size: int):
    import tensorflow as tf

    from quantbench.techniques.schemes import SCHEMES

    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    SCHEMES.get(scheme).configure(converter, lambda: ([image[None]] for image in calibration),
                                      SCHEMES.params_of(SCHEMES.spec(scheme)))  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{scheme}.tflite"
    path.write_bytes(converter.convert())
    return path


def _structured(sparsity: float, clusters: int):
    """flat_bn_classifier with every kernel given `sparsity` zeros and `clusters` values,
    without training (what prune/cluster leave behind, made exactly)."""
    import tf_keras as keras

    keras.utils.set_random_seed(3)
    model = flat_bn_classifier(3)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, *rest = layer.get_weights()
            levels = np.linspace(-0.5, 0.5, clusters - 1) + 0.05  # nonzero; zero is the k-th
            values = rng.choice(levels, size=kernel.shape)
            values[rng.random(kernel.shape) < sparsity] = 0.0
            layer.set_weights([values.astype(np.float32), *rest])
    return model


def test_file_contents_match_the_kernels_zeros_and_values(tmp_path):
    from quantbench.measure import filestats

    model = _structured(sparsity=0.5, clusters=5)
    kernels = _kernels(model)
    zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    float32 = filestats.weight_stats(_convert(model, "float32", tmp_path))
    assert len(float32.tensors) == 3  # two convolutions and the dense layer
    assert float32.sparsity == pytest.approx(zeros, abs=1e-6)  # folding BN keeps zeros zero
    # Batch norm folds a scale per output channel: <= 5 values per channel, more per tensor.
    assert float32.max_unique_per_channel <= 5
    dense = next(t for t in float32.tensors if t.size == kernels[-1].size)
    assert dense.unique == len(np.unique(kernels[-1]))  # no batch norm after the dense layer
    int8 = filestats.weight_stats(_convert(model, "int8", tmp_path))
    assert {t.dtype for t in int8.tensors} == {"int8"}
    assert int8.sparsity >= zeros - 1e-6 and int8.max_unique_per_channel <= 5


def test_gzip_size_rewards_zeros_and_shared_values(tmp_path):
    from quantbench.measure import filestats

    plain = _convert(flat_bn_classifier(3), "float32", tmp_path / "a")
    structured = _convert(_structured(0.5, 5), "float32", tmp_path / "b")
    # The same tensors take the same bytes (names and metadata differ by a few).
    assert abs(plain.stat().st_size - structured.stat().st_size) < 0.05 * plain.stat().st_size
    assert filestats.gzip_size(structured) < 0.8 * filestats.gzip_size(plain)


def _results_for_recommendation():
    from quantbench.core.results import RunResults, VariantResult

    rows = [VariantResult(variant="keras_float", policy="Keras", kind="keras", accuracy=0.85)]
    for name, size, gz, acc in [("int8", 1_000_000, 800_000, 0.85),
                                ("prune50_pqat_int8", 1_000_000, 450_000, 0.845),
                                ("float16", 2_000_000, 1_900_000, 0.85)]:  # fmt: skip
        rows.append(VariantResult(variant=name, policy="x", size_bytes=size, gzip_bytes=gz,
                                  accuracy=acc))  # fmt: skip
    return RunResults(name="t", created="now", variants=rows)


def test_recommendation_by_gzip_size_and_its_limit():
    from quantbench.core.config import RecommendConfig
    from quantbench.analysis.recommend import recommend

    results = _results_for_recommendation()
    by_size = recommend(results, RecommendConfig(confidence="estimate"))
    by_gzip = recommend(results, RecommendConfig(objective="gzip_size", confidence="estimate"))
    assert by_gzip.chosen == "prune50_pqat_int8" and "gzipped" in by_gzip.reason
    assert by_size.chosen == "int8"  # same file size: accuracy breaks the tie
    limited = recommend(results, RecommendConfig(max_gzip_size_mb=0.5, confidence="estimate"))
    assert limited.chosen == "prune50_pqat_int8"
    assert any("gzip size" in why for why in limited.ruled_out["int8"])


def test_storage_note_says_sparsity_does_not_speed_up_litert():
    from quantbench.measure.explain import storage_notes
    from quantbench.core.results import WeightStats

    sparse = WeightStats(sparsity=0.5, max_unique=255, max_unique_per_channel=200)
    notes = storage_notes(sparse, 10.2, "int8", 10.0)
    assert len(notes) == 1 and "50% of its weights are zero" in notes[0]
    assert "not the latency" in notes[0] and "10.00 ms for int8" in notes[0]
    dense = WeightStats(sparsity=0.01, max_unique=255, max_unique_per_channel=255)
    assert storage_notes(dense, 10.0, "int8", 10.0) == []


@pytest.mark.realdata
@pytest.mark.slow
def test_prune_and_cluster_on_real_photos(flowers_dir, real_keras_home, tmp_path, monkeypatch):
    """MobileNetV2 (alpha 0.35, 64 px) on a few real photos per class: pruned to 50% and
    clustered to 16 values, both converted; the files hold what was asked (sparsity within 2
    points of the target, <= 16 values per channel before int8 rounding) and gzip smaller."""
    from quantbench.measure import filestats
    from quantbench.ml.model import build_classifier
    from quantbench.ml.train import fit

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    cfg = resolve("smoke", overrides={"data.dir": str(flowers_dir), "data.image_size": 64,
                                      "data.max_images_per_class": 16, "train.epochs": 1})  # fmt: skip
    dataset = load_dataset(cfg.data)
    job = TrainJob(dataset, Preprocessing(64, cfg.data.scaling), cfg, seed=1, repeat=0)
    model = build_classifier(len(dataset.classes), cfg.model, 64)
    fit(model, dataset, job.preprocessing, cfg.train, seed=1)
    pruned, _ = _apply("prune", model, job, sparsity=0.5, epochs=1)
    clustered, _ = _apply("cluster", model, job, clusters=16, epochs=1)

    def stats(m, scheme):
        path = _convert_at(m, scheme, tmp_path / f"{id(m)}", 64)
        return filestats.weight_stats(path), filestats.gzip_size(path)

    (plain, plain_gz), (sparse, sparse_gz) = stats(model, "int8"), stats(pruned, "int8")
    sparse_float, _ = stats(pruned, "float32")
    # tfmot prunes Conv2D and Dense kernels, not depthwise ones (its registry lists none).
    pruned_kinds = [t for t in sparse_float.tensors if t.op != "DEPTHWISE_CONV_2D"]
    share = sum(t.zeros for t in pruned_kinds) / sum(t.size for t in pruned_kinds)
    assert abs(share - 0.5) <= 0.02  # what the float file holds
    assert all(t.zeros == 0 for t in sparse_float.tensors if t.op == "DEPTHWISE_CONV_2D")
    assert sparse.sparsity >= sparse_float.sparsity - 1e-9  # int8 rounding only adds zeros
    assert plain.sparsity < 0.1 and sparse_gz < 0.85 * plain_gz
    clustered_float, _ = stats(clustered, "float32")
    assert clustered_float.max_unique_per_channel <= 16 < plain.max_unique_per_channel
