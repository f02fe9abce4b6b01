"""QAT: range warm-up, batch-norm freezing, both recipes end to end, every QAT scheme's row."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from quantbench.ml import qat
from quantbench.core.config import TRANSFORM_SCHEMES
from quantbench.engine.configure import resolve
from quantbench.engine.plan import transform_scheme_specs
from quantbench.ml.data import load_dataset
from quantbench.ml.preprocess import Preprocessing
from tests.conftest import make_image_folder

SIZE = 32


def flat_bn_classifier(num_classes=3, size=SIZE, dropout=0.0):
    """A tiny flat model with MobileNetV2's pieces: conv+BN+ReLU6, a linear BN projection."""
    import tf_keras as keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization(name="project_BN")(x)  # linear: no activation
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _range(model, prefix: str, which: str) -> np.ndarray:
    matches = [v for v in model.non_trainable_variables
               if v.name.startswith(prefix) and v.name.split("/")[-1].startswith(which)]  # fmt: skip
    assert matches, f"no {which} variable under {prefix}"
    return matches[0].numpy()


def test_warm_up_sets_each_range_to_the_mean_batch_range_and_keeps_bn_statistics():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = flat_bn_classifier()
    # A projection whose outputs span far more than the initial [-6, 6] range.
    bn = model.get_layer("project_BN")
    bn.set_weights([w * 10 if i == 0 else w for i, w in enumerate(bn.get_weights())])
    inputs = np.random.default_rng(0).uniform(-1, 1, (64, SIZE, SIZE, 3)).astype(np.float32)
    qat_model = qat.quantize(model)
    assert _range(qat_model, "quant_project_BN", "output_max") == pytest.approx(6.0)
    statistics_before = [v.numpy().copy() for v in qat._batch_norm_statistics(qat_model)]

    count = qat.warm_up_ranges(qat_model, inputs, batch_size=32)

    assert count >= 3  # ReLU6 output, projection output, softmax pre-activation
    projection = keras.Model(model.input, model.get_layer("project_BN").output)
    # The warm-up runs in training mode: batch norm normalizes with each batch's statistics.
    batch_max = [projection(inputs[i : i + 32], training=True).numpy().max() for i in (0, 32)]
    batch_min = [projection(inputs[i : i + 32], training=True).numpy().min() for i in (0, 32)]
    assert max(batch_max) > 6  # the case that collapses QAT fine-tuning without a warm-up
    assert _range(qat_model, "quant_project_BN", "output_max") == pytest.approx(np.mean(batch_max), rel=0.05)
    assert _range(qat_model, "quant_project_BN", "output_min") == pytest.approx(np.mean(batch_min), rel=0.05)
    for before, after in zip(statistics_before, qat._batch_norm_statistics(qat_model)):
        np.testing.assert_array_equal(before, after.numpy())


def test_moving_average_patch_is_restored_even_after_an_error():
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    original = quantizers.quant_ops.MovingAvgQuantize
    with pytest.raises(RuntimeError), qat._moving_averages_follow_batch([]):
        assert quantizers.quant_ops.MovingAvgQuantize is not original
        raise RuntimeError("boom")
    assert quantizers.quant_ops.MovingAvgQuantize is original


def test_freeze_batch_norm_keeps_moving_statistics_through_training():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    qat_model = qat.quantize(flat_bn_classifier())
    assert qat.freeze_batch_norm(qat_model) == 2
    before = [v.numpy().copy() for v in qat._batch_norm_statistics(qat_model)]
    x = np.random.default_rng(0).uniform(-1, 1, (16, SIZE, SIZE, 3)).astype(np.float32)
    qat_model.compile("adam", "sparse_categorical_crossentropy")
    qat_model.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    for b, a in zip(before, qat._batch_norm_statistics(qat_model)):
        np.testing.assert_array_equal(b, a.numpy())


def test_recipe_settings_follow_the_float_baseline_unless_overridden():
    from quantbench.techniques.transforms import TRANSFORMS

    def settings(cfg, recipe):
        (spec,) = [t for t in cfg.transforms if t.params["recipe"] == recipe] or \
            [TRANSFORMS.spec("qat", recipe=recipe)]  # fmt: skip
        return qat.recipe_settings(TRANSFORMS.params_of(spec), cfg)

    cfg = resolve("default")
    assert settings(cfg, "fresh") == (cfg.train.epochs, cfg.train.learning_rate)
    epochs, lr = settings(cfg, "finetune")
    assert epochs == 2 and lr == pytest.approx(cfg.train.learning_rate / 10)
    cfg = resolve("default", overrides={"qat.recipes": ["seed", "finetune"], "qat.epochs": 3,
                                        "qat.learning_rate": 1e-6})  # fmt: skip
    assert settings(cfg, "finetune") == (3, 1e-6)
    assert settings(cfg, "fresh") == (3, 1e-6)  # asked for by its old name, `seed`


# tiny_run's seed (weights, shuffling, split). Fixed, so a run repeats; QUANTBENCH_TEST_SEED varies
# it to check that the QAT-tracks-float assertions hold for other seeds too, not just this one.
TINY_RUN_SEED = int(os.environ.get("QUANTBENCH_TEST_SEED", "1"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Float baseline and both QAT recipes on tiny generated images, every QAT scheme converted.

    60 validation images (20 per class): with the 6 this scored before, one image was 17 points
    and the int8-tracks-float test failed 1 run in 3. 10 float epochs: after 2 (6 steps) the
    unseeded float model scored 0/6 or 4/6 in 3 of 6 runs, i.e. there was little to track."""
    from quantbench.commands import run as runner
    from quantbench.engine.stages.latency import LatencyStage
    from quantbench.engine.context import BaseSource, Resources
    from quantbench.ml.train import fit, seed_everything

    seed = TINY_RUN_SEED
    root = tmp_path_factory.mktemp("qat")
    folder = make_image_folder(root / "photos", per_class=40, size=40)
    cfg = resolve("smoke", overrides={
        "data.dir": str(folder), "data.image_size": SIZE, "data.max_images_per_class": 40,
        "data.validation_split": 0.5, "data.split_seed": seed, "train.seed": seed,
        "train.epochs": 10, "train.learning_rate": 1e-2, "qat.recipes": ["fresh", "finetune"],
        "qat.epochs": 1, "convert.calibration_images": 8, "convert.schemes": ["float32"],
        "convert.transform_schemes": TRANSFORM_SCHEMES,
        "output_dir": str(root / "runs"), "evaluate.threads": [1],
    })  # fmt: skip

    class TinyBaseline(BaseSource):
        """The run's float model, a tiny flat CNN with batch norm instead of MobileNetV2."""

        def key_params(self, repeat):
            return {"kind": "tiny-test-model", "seed": seed}

        def rebuild(self, ctx, repeat):
            return flat_bn_classifier()

        def produce(self, ctx, repeat):
            seed_everything(seed)  # the float model's initial weights were the one unseeded draw
            model = flat_bn_classifier()
            return model, fit(model, ctx.dataset, ctx.preprocessing, cfg.train, seed=seed)

    patch = pytest.MonkeyPatch()
    # Latency has its own tests; keep this one quick.
    patch.setattr(LatencyStage, "applies", lambda self, job: False)
    patch.setattr(qat, "build_classifier", lambda n, model_cfg, size: flat_bn_classifier(n, size))
    try:
        results, _ = runner.orchestrate(cfg, "run", TinyBaseline(), dataset=load_dataset(cfg.data),
                                        resources=Resources(cores=1, convert_workers=2))  # fmt: skip
    finally:
        patch.undo()
    return cfg, results


@pytest.mark.pipeline
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["fresh", "finetune"])
def test_every_qat_scheme_has_a_row_converted_failed_or_identical(tiny_run, recipe):
    cfg, results = tiny_run
    rows = {v.scheme: v for v in results.variants if v.source == f"qat_{recipe}" and v.scheme}
    assert sorted(rows) == sorted(s.name for s in transform_scheme_specs(cfg))
    for scheme, row in rows.items():
        assert row.variant == f"qat_{recipe}_{scheme}"
        if row.status == "failed":
            assert row.error, scheme
        elif row.status == "identical":
            twin = results.variant(row.identical_to)
            assert twin is not None and twin.status == "ok" and twin.source == row.source
            assert row.accuracy == twin.accuracy
            assert abs(row.size_bytes - twin.size_bytes) <= 1024  # at most the options record
        else:
            assert 0 <= row.accuracy <= 1 and row.size_bytes > 0
    # The deprecated optimizations are DEFAULT under another name: the same bytes.
    default = rows["dynamic_range"]
    for alias in ("optimize_for_size", "optimize_for_latency"):
        assert rows[alias].status == "identical" and rows[alias].identical_to == default.variant
    assert rows["int8"].status in ("ok", "identical")
    # float16 is ignored on a QAT model: DEFAULT's int8 model, apart from the options record.
    assert rows["float16"].status == "identical" and rows["float16"].identical_to == default.variant
    assert rows["float16"].input_dtype == "float32"


@pytest.mark.pipeline
@pytest.mark.slow
def test_each_recipe_records_its_training_and_keras_row(tiny_run):
    _, results = tiny_run
    by_name = {t.name: t for t in results.training}
    assert set(by_name) == {"float", "qat_fresh", "qat_finetune"}
    assert by_name["qat_fresh"].recipe == "fresh" and len(by_name["qat_fresh"].epochs) == 1
    assert by_name["qat_finetune"].total_seconds > 0
    for recipe in ("fresh", "finetune"):
        keras_row = results.variant(f"keras_qat_{recipe}")
        assert keras_row is not None and keras_row.kind == "keras" and keras_row.accuracy is not None


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def allowed_disagreements(n: int, rate: float = 0.05, false_alarm: float = 1e-3) -> int:
    """Most top-1 disagreements among n images that a model disagreeing on `rate` of all images
    exceeds with probability <= false_alarm (exact binomial bound)."""
    return next(k for k in range(n + 1) if binomial_tail(n, rate, k + 1) <= false_alarm)


@pytest.mark.pipeline
@pytest.mark.slow
def test_finetuned_qat_int8_tracks_the_float_model(tiny_run):
    _, results = tiny_run
    float_row = results.variant("keras_float")
    int8 = results.variant("qat_finetune_int8")
    n = int8.eval_images
    # "Tracks" = disagrees with the float model's top-1 on <= 5% of images. The threshold is the
    # exact binomial bound for n images: for n = 60, 9 (agreement >= 0.85, accuracy within 0.15),
    # which such a model exceeds with p < 1e-3, while one disagreeing on 30% passes with p < 0.01
    # (the check below; against the former 6 images and 0.8 it passed with p = 0.42).
    k = allowed_disagreements(n)
    assert 1 - binomial_tail(n, 0.3, k + 1) < 0.01, f"{n} images cannot tell tracking from not"
    # Learnable colours make the comparison meaningful: chance (1/3) scores > 0.6 with p < 1e-5.
    assert float_row.accuracy > 0.6
    # In whole images, so that the boundary (51/60 against 1 - 9/60) is not a float rounding.
    assert round(int8.accuracy * n) >= round(float_row.accuracy * n) - k
    assert round(int8.agreement * n) >= n - k


@pytest.mark.realdata
@pytest.mark.slow
def test_finetune_recipe_on_real_photos(flowers_dir, real_keras_home, tmp_path, monkeypatch):
    """Real tf_flowers photos (64 px, a few per class): the projections exceed +/-6, the
    warm-up makes the wrapped model agree with the float one before any QAT step, and the
    fine-tuned QAT model converts to int8 that agrees with its Keras twin."""
    from quantbench.techniques.convert import convert_all
    from quantbench.measure.evaluate import predict_tflite
    from quantbench.ml.model import build_classifier
    from quantbench.ml.train import fit, predict_keras

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    cfg = resolve("smoke", overrides={
        "data.dir": str(flowers_dir), "data.image_size": 64, "data.max_images_per_class": 16,
        "data.validation_split": 0.25, "train.epochs": 1, "qat.epochs": 1,
    })  # fmt: skip
    dataset = load_dataset(cfg.data)
    preprocessing = Preprocessing(64, cfg.data.scaling)
    float_model = build_classifier(len(dataset.classes), cfg.model, 64)
    fit(float_model, dataset, preprocessing, cfg.train, seed=1)
    images = np.concatenate([dataset.train_images, dataset.val_images])
    float_top1 = predict_keras(float_model, images, preprocessing).argmax(1)

    def wrapped_model(warm_up: bool):
        wrapped = qat.quantize(float_model)
        qat.freeze_batch_norm(wrapped)
        qat.warm_up_ranges(wrapped, preprocessing.scale(dataset.train_images))
        if not warm_up:  # back to tfmot's initial [-6, 6]: where a plain fine-tune starts
            captured = []
            with qat._moving_averages_follow_batch(captured):
                wrapped(preprocessing.scale(dataset.train_images[:2]), training=True)
            for min_var, max_var in captured:
                min_var.assign(np.full(min_var.shape, -6.0, np.float32))
                max_var.assign(np.full(max_var.shape, 6.0, np.float32))
        return wrapped

    warmed = wrapped_model(warm_up=True)
    projections = [abs(float(v.numpy())) for v in warmed.non_trainable_variables
                   if "project_BN/output_m" in v.name]  # fmt: skip
    assert max(projections) > 6  # MobileNetV2's linear bottlenecks outgrow the initial range
    agreement = {}
    for warm_up, model in ((True, warmed), (False, wrapped_model(warm_up=False))):
        top1 = predict_keras(model, images, preprocessing).argmax(1)
        agreement[warm_up] = (top1 == float_top1).mean()
    assert agreement[True] >= 0.7
    assert agreement[True] >= agreement[False] + 0.2, agreement

    from quantbench.techniques.transforms import TRANSFORMS, TrainJob

    (spec,) = cfg.transforms or [TRANSFORMS.spec("qat", epochs=1)]
    job = TrainJob(dataset, preprocessing, cfg, seed=1, repeat=0)
    qat_model, training = qat.train_qat(TRANSFORMS.params_of(spec), float_model=float_model, job=job)
    assert training.recipe == "finetune" and len(training.epochs) == 1
    calibration = preprocessing.scale(dataset.train_images[:8])
    (conversion,) = convert_all(qat_model, ["int8"], calibration, tmp_path)
    assert conversion.error is None
    inputs = preprocessing.scale(dataset.val_images)
    tflite_top1 = predict_tflite(conversion.path, inputs, threads=2).argmax(1)
    keras_top1 = predict_keras(qat_model, dataset.val_images, preprocessing).argmax(1)
    assert (tflite_top1 == keras_top1).mean() >= 0.8
