"""Pruning, clustering and their quantization-preserving QAT on a tiny model: what the files
hold (sparsity, distinct values), that the re-wrapped PQAT/CQAT model computes what the
trained one did, and the plan's chains."""

from __future__ import annotations

import numpy as np
import pytest

from quantbench.config import resolve
from quantbench.data import load_dataset
from quantbench.preprocess import Preprocessing
from quantbench.techniques.transforms import TRANSFORMS, TrainJob
from tests.conftest import make_image_folder
from tests.test_qat import SIZE, flat_bn_classifier


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from quantbench.train import fit

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
    from quantbench import compress

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
    from quantbench.plan import models_of, plan

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
