"""The user's classes: names in the model's output order, checked against the photo folders.

`quantize` scores a model on a folder of photos; the model's outputs are classes in some order
(sorted folder names unless `--labels` lists them), and the dataset is relabelled to match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantbench.core.config import RunConfig
from quantbench.core.errors import DataError, ModelError, displayable, read_text_file

def read_labels(path: Path) -> list[str]:
    path = Path(path).expanduser()
    text = read_text_file(path, "labels file", DataError)
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path} names a class twice: {', '.join(duplicates)}",
                        tip="list each class once, in the model's output order")
    if not names:
        raise DataError(f"{path} is empty", tip="one class name per line, in output order")
    return names


def class_order(cfg: RunConfig, num_outputs: int) -> list[str]:
    """The class names in the model's output order; folders checked against them."""
    from quantbench.ml.data import check_class_folders, resolve_data_dir

    root = resolve_data_dir(cfg.data.dir)
    folders = [displayable(f.name) for f in check_class_folders(root)]  # as load_dataset names them
    if cfg.data.labels_file is None:
        order, source = folders, f"{len(folders)} class folders in {root}"
    else:
        order = read_labels(cfg.data.labels_file)
        source = f"{len(order)} class names in {cfg.data.labels_file}"
        missing = [n for n in order if n not in folders]
        extra = [f for f in folders if f not in order]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"no folder for {', '.join(missing)}")
            if extra:
                parts.append(f"folders not in the labels file: {', '.join(extra)}")
            raise DataError(
                f"the labels file and the folders of {root} differ: {'; '.join(parts)}",
                tip="name one sub-folder of DIR after each line of the labels file, exactly",
            )
    if len(order) != num_outputs:
        raise ModelError(
            f"the model has {num_outputs} outputs but there are {source}",
            tip="give DIR one sub-folder per model output (or pass --labels FILE listing the "
            "model's classes in output order)",
        )
    return order


def reorder_classes(dataset, order: list[str]):
    """Relabel a dataset (sorted folder order) to the model's output order."""
    from dataclasses import replace

    if list(dataset.classes) == list(order):
        return dataset
    mapping = np.array([order.index(c) for c in dataset.classes], dtype=np.int32)
    counts = dataset.summary.class_counts
    summary = dataset.summary.model_copy(
        update={"classes": list(order), "class_counts": {c: counts[c] for c in order}}
    )
    from quantbench.ml.data import describe_evaluation

    relabelled = replace(
        dataset, classes=list(order), train_labels=mapping[dataset.train_labels],
        val_labels=mapping[dataset.val_labels], summary=summary,
    )  # fmt: skip
    return describe_evaluation(relabelled, summary.eval_split or "validation split")


def evaluate_on_all(dataset):
    """--eval-split all: score every image; calibration still comes from the training split."""
    from dataclasses import replace

    summary = dataset.summary.model_copy(
        update={"val_count": dataset.summary.train_count + dataset.summary.val_count}
    )
    from quantbench.ml.data import describe_evaluation

    return describe_evaluation(replace(
        dataset,
        val_images=np.concatenate([dataset.train_images, dataset.val_images]),
        val_labels=np.concatenate([dataset.train_labels, dataset.val_labels]),
        val_paths=[],  # the training split's paths are not kept by load_dataset
        summary=summary, val_digests=dataset.train_digests + dataset.val_digests,
    ), "every photo (calibration photos included)")  # fmt: skip
