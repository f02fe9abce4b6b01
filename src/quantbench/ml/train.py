"""Training with per-epoch history and wall-clock time, fed by the shared preprocessing."""

from __future__ import annotations

import time

import numpy as np

from quantbench.core.config import TrainConfig
from quantbench.ml.data import Dataset
from quantbench.ml.preprocess import Preprocessing
from quantbench.core.results import EpochRecord, TrainingResult


def _batches(images, labels, batch_size: int, preprocessing: Preprocessing, shuffle_seed=None):
    """A keras Sequence that scales uint8 images per batch with the one preprocessing function."""
    import tf_keras as keras

    class Batches(keras.utils.Sequence):
        def __init__(self) -> None:
            super().__init__()
            self.order = np.arange(len(images))
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            return int(np.ceil(len(images) / batch_size))

        def __getitem__(self, i: int):
            idx = self.order[i * batch_size : (i + 1) * batch_size]
            return preprocessing.scale(images[idx]), labels[idx]

        def on_epoch_end(self) -> None:
            if shuffle_seed is not None:
                self.order = np.random.default_rng(shuffle_seed + self.epoch).permutation(len(images))
                self.epoch += 1

    return Batches()


def make_optimizer(cfg: TrainConfig, learning_rate: float | None = None):
    import tf_keras as keras

    lr = learning_rate if learning_rate is not None else cfg.learning_rate
    return {
        "adam": lambda: keras.optimizers.Adam(lr),
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
    }[cfg.optimizer]()


def _epoch_logger(total_epochs: int, records: list[EpochRecord], emit):
    import tf_keras as keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            record = EpochRecord(
                epoch=epoch + 1,
                loss=float(logs["loss"]),
                accuracy=float(logs.get("accuracy", float("nan"))),
                val_loss=float(logs["val_loss"]) if "val_loss" in logs else None,
                val_accuracy=float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
                seconds=time.perf_counter() - self.started,
            )
            records.append(record)
            val = f", val accuracy {record.val_accuracy:.1%}" if record.val_accuracy is not None else ""
            emit(
                "info",
                f"epoch {record.epoch}/{total_epochs}: loss {record.loss:.3f}, "
                f"accuracy {record.accuracy:.1%}{val} ({record.seconds:.1f} s)"
            )

    return EpochLogger()


def fit(
    model,
    dataset: Dataset,
    preprocessing: Preprocessing,
    cfg: TrainConfig,
    *,
    seed: int,
    name: str = "float",
    recipe: str = "float",
    repeat: int = 0,
    learning_rate: float | None = None,
    epochs: int | None = None,
    callbacks: list | None = None,
    emit=lambda level, text: None,
) -> TrainingResult:
    """Compile and fit `model`; returns its per-epoch history and total wall-clock time."""
    import tf_keras as keras

    epochs = cfg.epochs if epochs is None else epochs
    model.compile(
        optimizer=make_optimizer(cfg, learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    records: list[EpochRecord] = []
    started = time.perf_counter()
    if epochs > 0:
        model.fit(
            _batches(dataset.train_images, dataset.train_labels, cfg.batch_size, preprocessing, seed),
            validation_data=_batches(
                dataset.val_images, dataset.val_labels, cfg.batch_size, preprocessing
            ),
            epochs=epochs,
            verbose=0,
            callbacks=[_epoch_logger(epochs, records, emit), *(callbacks or [])],
        )
    return TrainingResult(
        name=name,
        recipe=recipe,
        seed=seed,
        repeat=repeat,
        epochs=records,
        total_seconds=time.perf_counter() - started,
        train_images=len(dataset.train_images),
    )


def predict_keras(model, images: np.ndarray, preprocessing: Preprocessing, batch_size: int = 64):
    """Class probabilities of a Keras model on uint8 images."""
    batches = _batches(images, np.zeros(len(images)), batch_size, preprocessing)
    return np.concatenate([model.predict_on_batch(batches[i][0]) for i in range(len(batches))])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (weights init, dropout, shuffling)."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
