"""`quantbench analyze RUN_DIR`: the per-layer error of a finished run's integer variants
against the float model, by Keras layer (techniques/layers.py), added to its results.json,
CSVs and report."""

from __future__ import annotations

from pathlib import Path


def analyze_run(run_dir: Path, variants: list[str] | None = None, emit=lambda level, text: None):
    """`quantbench analyze RUN_DIR`: the per-layer analysis of a finished run's integer
    variants (or those named), added to its results.json, CSVs and report."""
    from quantbench.core import results as results_mod
    from quantbench.commands.run import write_report
    from quantbench.engine.configure import validate
    from quantbench.engine.plan import hold_out
    from quantbench.techniques.layers import analyze
    from quantbench.ml.data import calibration_indices, calibration_split, load_dataset
    from quantbench.core.errors import ConfigError
    from quantbench.ml.preprocess import Preprocessing
    from quantbench.techniques.selective import add_analysis
    from quantbench.techniques.schemes import SCHEMES

    run_dir = Path(run_dir)
    results = results_mod.load(run_dir)
    cfg = validate(results.config)
    rows = [v for v in results.rows(0) if v.spec is not None and v.spec.scheme is not None
            and not v.spec.transforms and v.scheme in SCHEMES]  # fmt: skip
    integer = [v for v in rows if SCHEMES.get(v.scheme).needs_representative_dataset
               and not SCHEMES.get(v.scheme).needs_search]  # fmt: skip
    picked = [v for v in rows if v.variant in variants] if variants else integer
    if variants and len(picked) < len(variants):
        known = ", ".join(v.variant for v in integer) or "none"
        raise ConfigError(f"no such variant of the float model in {run_dir}: "
                          f"{', '.join(set(variants) - {v.variant for v in picked})}",
                          tip=f"integer variants of this run: {known}")  # fmt: skip
    if not picked:
        raise ConfigError(f"{run_dir} has no integer variant of the float model to analyze",
                          tip="int8, int8_io, int8_per_tensor and int16x8 can be analyzed")
    emit("step", "reading images")
    dataset = load_dataset(cfg.data, emit)
    if results.command == "quantize":
        from quantbench.commands.quantize import prepare_model

        model = prepare_model(cfg)[0].model
        if cfg.quantize.eval_split == "rest":
            dataset = calibration_split(dataset, cfg.convert.calibration_images, cfg.data.split_seed)
    else:
        import tf_keras as keras

        model = keras.models.load_model(run_dir / "model.keras", compile=False)
        dataset = hold_out(dataset, cfg)  # the run's calibration slice is of what it trained on
    data = cfg.data
    scale = Preprocessing(data.image_size, data.scaling, data.channel_order).scale
    picks = calibration_indices(len(dataset.train_images), cfg.convert.calibration_images, data.split_seed)
    calibration = scale(dataset.train_images[picks])
    for row in picked:
        emit("step", f"analyzing {row.variant}")
        analysis = analyze(model, row.spec.scheme, calibration, calibration, row.variant)
        add_analysis(results, analysis, run_dir)
        results_mod.save(results, run_dir)
    write_report(results, run_dir, emit)
    return results
