"""Selective quantization's search against an exhaustive one-layer-at-a-time ablation.

On a finished run's trained model (RUN_DIR/model.keras, its config and photos), with the
same base scheme, calibration images, search images (the run's photos held out of training)
and budget:

- search: quantbench.techniques.selective.search (rank by the per-layer analysis, log-spaced search of
  the number of worst layers kept in float, candidates converted in parallel workers);
- ablation: convert and score every quantized op kept in float on its own (N candidates),
  rank the ops by the accuracy that recovers, then add them in that order until the budget
  holds (more candidates).

Both final denylists are then converted and scored on the run's validation split (which
neither search saw). Usage:

    python benchmarks/selective_vs_ablation.py RUN_DIR [--base int8_per_tensor] [--budget 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import _common  # noqa: F401  - sys.path and Keras 2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--base", default="int8_per_tensor")
    parser.add_argument("--budget", type=float, default=None, help="points (default: the run's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--search-images", type=int, default=None, help="default: selective's")
    args = parser.parse_args()

    import tf_keras as keras

    from quantbench.core import atomic, results as results_mod
    from quantbench.core.config import RunConfig
    from quantbench.techniques.converter import ConverterPool, export_saved_model
    from quantbench.ml.data import calibration_indices, load_dataset
    from quantbench.ml.preprocess import Preprocessing
    from quantbench.engine.plan import hold_out
    from quantbench.techniques.selective import score_in_pool, search, search_set
    from quantbench.techniques.schemes import SCHEMES
    from quantbench.workers import scratch_dir

    results = results_mod.load(args.run_dir)
    cfg = RunConfig.model_validate(results.config)
    budget = args.budget if args.budget is not None else cfg.recommend.max_accuracy_drop
    dataset = load_dataset(cfg.data)
    dataset = hold_out(dataset, cfg)  # the run's search photos, held out of training again
    assert dataset.summary.search_count == results.data.search_count
    pre = Preprocessing(cfg.data.image_size, cfg.data.scaling, cfg.data.channel_order)
    picks = calibration_indices(len(dataset.train_images), cfg.convert.calibration_images, cfg.data.split_seed)
    calibration = pre.scale(dataset.train_images[picks])
    ctx = SimpleNamespace(cfg=cfg, dataset=dataset)
    spec = SCHEMES.spec("selective", base=args.base)
    spec = SCHEMES.spec("selective", base=args.base,
                            search_images=args.search_images or SCHEMES.params_of(spec).search_images)
    images, labels, source = search_set(ctx, SCHEMES.params_of(spec).search_images)
    inputs = pre.scale(images)
    val_inputs = pre.scale(dataset.val_images)
    model = keras.models.load_model(args.run_dir / "model.keras", compile=False)
    float_accuracy = float(np.mean(model.predict(inputs, verbose=0).argmax(1) == labels))
    float_val = float(np.mean(model.predict(val_inputs, verbose=0).argmax(1) == dataset.val_labels))
    floor = float_accuracy - budget / 100

    started = time.perf_counter()
    resolved, trace, analysis = search(model, spec, calibration, inputs, labels, float_accuracy,
                                       budget, workers=args.workers, latency=False,
                                       emit=lambda level, text: print(text, flush=True))  # fmt: skip
    print(f"search: {time.perf_counter() - started:.0f} s, {trace.conversions} candidates, "
          f"{len(trace.float_layers)} float layers", flush=True)
    search_seconds = time.perf_counter() - started
    nodes = [e.tensor for e in analysis.layers]

    def denylisted(names: list[str]) -> dict:
        return SCHEMES.spec("selective", base=args.base, denylist=names).model_dump(mode="json")

    def scorer(tmp: Path, pool, saved: Path, calibration_path: Path, images: np.ndarray):
        """Convert candidates and score them in the pool's workers, as the search does."""
        images_path = atomic.save_npy(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.float32))

        def score(jobs: list[tuple[str, list[str]]], truth) -> dict[str, float]:
            paths = [(denylisted(names), str(tmp / f"{tag}.tflite")) for tag, names in jobs]
            outcomes = pool.convert(saved, paths, calibration_path)
            for (tag, _), (_, path) in zip(jobs, paths):
                if outcomes[path][1]:
                    raise SystemExit(f"{tag}: {outcomes[path][1]}")
            return score_in_pool(pool, {tag: path for (tag, _), (_, path) in zip(jobs, paths)},
                                 images_path, truth, 600)  # fmt: skip

        return score

    # The ablation gets the search's advantages too: one pool of workers (TensorFlow imported
    # while the model is exported, the calibration made and the images loaded once per
    # worker) converting and scoring all its candidates in parallel. Its time counts what the
    # search's counts: from starting its workers to closing them.
    started = time.perf_counter()
    with scratch_dir("ablation") as tmp, ConverterPool(args.workers) as pool:
        pool.warm()
        saved = export_saved_model(model, Path(tmp) / "saved_model")
        score = scorer(Path(tmp), pool, saved, atomic.save_npy(Path(tmp) / "calibration.npy", calibration),
                       inputs)  # fmt: skip
        single = score([(f"one-{i}", [n]) for i, n in enumerate(nodes)], labels)
        print(f"ablation: {len(nodes)} single-layer candidates in {time.perf_counter() - started:.0f} s",
              flush=True)
        order = sorted(range(len(nodes)), key=lambda i: -single[f"one-{i}"])
        # Then the ablation's ranking, prefixes tried 8 at a time.
        greedy, chosen, candidates = [nodes[i] for i in order], None, len(nodes)
        for start in range(1, len(nodes) + 1, 8):
            sizes = list(range(start, min(start + 8, len(nodes) + 1)))
            scores = score([(f"greedy-{k}", greedy[:k]) for k in sizes], labels)
            candidates += len(sizes)
            passing = [k for k in sizes if scores[f"greedy-{k}"] >= floor - 1e-12]
            print(f"greedy {sizes[0]}-{sizes[-1]}: {[round(scores[f'greedy-{k}'], 3) for k in sizes]}",
                  flush=True)
            if passing:
                chosen = greedy[:passing[0]]
                break
    ablation_seconds = time.perf_counter() - started

    # Both answers (and the plain base) scored on the validation split neither search saw.
    with scratch_dir("final") as tmp, ConverterPool(args.workers) as pool:
        saved = export_saved_model(model, Path(tmp) / "saved_model")
        score = scorer(Path(tmp), pool, saved, atomic.save_npy(Path(tmp) / "calibration.npy", calibration),
                       val_inputs)  # fmt: skip
        final = score([("search", trace.float_nodes), ("ablation", chosen or greedy), ("plain", [])],
                      dataset.val_labels)  # fmt: skip

    names = {e.tensor: e.layer or e.tensor for e in analysis.layers}
    report = {
        "base": args.base, "budget_points": budget, "quantizable_ops": len(nodes),
        "search_images": source, "float_validation_accuracy": float_val,
        "plain_validation_accuracy": final["plain"],
        "search": {"seconds": round(search_seconds, 1), "candidates": trace.conversions,
                   "float_layers": trace.float_layers, "validation_accuracy": final["search"]},
        "ablation": {"seconds": round(ablation_seconds, 1), "candidates": candidates,
                     "float_layers": [names[n] for n in (chosen or greedy)],
                     "validation_accuracy": final["ablation"]},
        "time_ratio": round(search_seconds / ablation_seconds, 3),
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
