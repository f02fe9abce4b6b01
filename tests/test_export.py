"""`quantbench export`: the folder, the card's figures against results.json, the refusals."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from quantbench.analysis import recommend as recommend_mod
from quantbench.commands.export import CARD_FILE, LABELS_FILE, ExportError, export
from quantbench.core import results as results_mod
from quantbench.core.config import RecommendConfig
from quantbench.core.errors import QuantbenchError
from quantbench.core.results import TargetResult
from quantbench.core.specs import TechniqueSpec, VariantSpec
from tests.fixtures_results import make_results
from tests.test_cli import assert_clean_error, quantbench

OK_VARIANTS = ["float32", "dynamic_range", "float16", "int8", "int8_io", "qat_finetune_int8"]


def fake_tflite(variant: str, size: int) -> bytes:
    """Bytes shaped like a .tflite file's start (the identifier at offset 4), `size` long."""
    head = b"\x1c\x00\x00\x00TFL3" + variant.encode()
    return head + b"\x00" * (size - len(head))


def build_run(path: Path, *, stored: bool = True, mutate=None) -> Path:
    """A run directory like a finished run's: results.json (with per-photo intervals, paired
    differences, targets, specs, gzip sizes), config.yaml, and a small fake .tflite file per
    row whose size results.json records (1/1000 of the fixture's sizes, order kept)."""
    results = make_results(photos=True)
    results.config["data"].update({"scaling": "-1..1", "channel_order": "rgb"})
    results.config["recommend"] = {"max_accuracy_drop": 5.0, "objective": "size",
                                   "confidence": "estimate"}  # fmt: skip
    results.environment.tf_keras = "2.21.0"
    path.mkdir(parents=True, exist_ok=True)
    for v in results.variants:
        if v.kind == "tflite" and v.scheme:
            v.spec = VariantSpec(scheme=TechniqueSpec(name=v.scheme, params={}))
        if v.path and v.path.endswith(".tflite") and v.repeat == 0:
            data = fake_tflite(v.variant, (v.size_bytes or 560_000) // 1000)
            (path / v.path).write_bytes(data)
            v.size_bytes = len(data)
            v.gzip_bytes = len(data) * 9 // 10 - 1
    int8 = results.variant("int8")
    int8.output_dtype = "float32"
    int8.accuracy_ci = [0.8301, 0.8874]  # odd digits: the card must round these, not others
    int8.targets = {
        "mcu": TargetResult(target="mcu", ok=True, figures={"arena_bytes": 180_224}),
        "edgetpu": TargetResult(target="edgetpu", ok=False,
                                reasons=["float input and output: the Edge TPU needs int8 I/O"]),
        "integer_only": TargetResult(target="integer_only", ok=False,
                                     reasons=["QUANTIZE and DEQUANTIZE ops at the edges"]),
    }  # fmt: skip
    if mutate is not None:
        mutate(results)
    if stored:
        recommend_mod.attach(results)
    results_mod.save(results, path)
    (path / "config.yaml").write_text(yaml.safe_dump(results.config, sort_keys=False))
    return path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return build_run(tmp_path / "run")


def rows_of(run_dir: Path) -> dict[str, dict]:
    raw = json.loads((run_dir / "results.json").read_text())
    return {v["variant"]: v for v in raw["variants"] if v["repeat"] == 0}, raw


def section(card: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    assert match, f"no section {title!r} in the card"
    return match.group(1)


def numbers(text: str) -> list[float]:
    found = re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", text)
    return [float(x.replace(",", "")) for x in found]


def ci_points(ci: list[float]) -> tuple[float, float]:
    """An interval of fractions as the card's percentages: one decimal."""
    return round(ci[0] * 100, 1), round(ci[1] * 100, 1)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def line_with(text: str, start: str) -> str:
    found = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


# --- the folder -------------------------------------------------------------------------------


def test_export_recommended_writes_the_three_files(run_dir, tmp_path):
    rows, raw = rows_of(run_dir)
    chosen = raw["extras"]["recommendation"]["chosen"]
    assert chosen == "dynamic_range"  # the smallest within 5 points
    out = tmp_path / "ship"
    done = export(run_dir, out)
    assert done.variant == chosen and done.chose == "recommended"
    assert files_in(out) == sorted([CARD_FILE, LABELS_FILE, f"{chosen}.tflite"])
    assert (out / f"{chosen}.tflite").read_bytes() == (run_dir / rows[chosen]["path"]).read_bytes()
    assert (out / LABELS_FILE).read_text().splitlines() == raw["data"]["classes"]
    card = (out / CARD_FILE).read_text()
    assert card.startswith(f"# {chosen}: ")
    assert "the run recommends it" in card and raw["extras"]["recommendation"]["reason"] in card
    assert not list(tmp_path.glob(".ship.*"))  # no staging folder left behind


def test_card_figures_equal_results_json(run_dir, tmp_path):
    out = tmp_path / "ship"
    export(run_dir, out, variant="int8")
    rows, raw = rows_of(run_dir)
    row, env = rows["int8"], raw["environment"]
    card = (out / CARD_FILE).read_text()

    # Accuracy as a percentage with one decimal, its interval, the photos.
    accuracy = section(card, "Accuracy")
    n, acc, low, high = _accuracy_figures(line_with(accuracy, "- accuracy:"))
    assert acc == round(row["accuracy"] * 100, 1)
    assert (low, high) == ci_points(row["accuracy_ci"])
    assert (low, high) == (83.0, 88.7)
    assert n == row["eval_images"]
    # The paired difference from the float model, its interval and McNemar's p.
    paired = row["vs_reference"]
    diff_line = line_with(accuracy, "- difference from the float model")
    assert f"({paired['reference']})" in diff_line
    figures = numbers(diff_line.replace("95%", "").replace(f"({paired['reference']})", ""))
    difference, ci_low, ci_high, photos, p, gained, lost = figures
    assert difference == round(paired["difference"] * 100, 1)
    assert (ci_low, ci_high) == ci_points(paired["ci"])
    assert photos == paired["n"] and (gained, lost) == (paired["gained"], paired["lost"])
    assert p == float(f"{paired['p_value']:.2g}")
    agreement = line_with(accuracy, "- top-1 agreement").removeprefix("- top-1")
    assert numbers(agreement)[0] == round(row["agreement"] * 100, 1)

    # Sizes: exact bytes.
    sizes = section(card, "Size")
    assert numbers(line_with(sizes, "- file:"))[0] == row["size_bytes"]
    assert numbers(line_with(sizes, "- gzipped"))[0] == row["gzip_bytes"]

    # Latency: one table row per figure, on the CPU recorded.
    latency = section(card, "Latency")
    assert env["cpu_model"] in latency and f"{env['cpu_cores']} cores" in latency
    table = [ln for ln in latency.splitlines() if re.match(r"\| \d", ln)]
    assert len(table) == len(row["latency"]) == 2
    for line, figure in zip(table, row["latency"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[0]) == figure["threads"] and cells[1] == figure["delegate"]
        assert float(cells[3]) == round(figure["median_ms"], 2)
        assert float(cells[4]) == round(figure["p90_ms"], 2)
        assert int(cells[5]) == figure["runs"]

    # Targets passed, and why the others are not.
    targets = section(card, "Targets")
    passed = [name for name, t in row["targets"].items() if t["ok"]]
    assert line_with(targets, "Passes:") == f"Passes: {', '.join(passed)}."
    assert "180224" in targets
    for t in row["targets"].values():
        for reason in t["reasons"]:
            assert reason in targets

    # Input, scheme, versions and config.
    io = section(card, "Input and output")
    cfg = raw["config"]["data"]
    assert f"{cfg['image_size']} x {cfg['image_size']} pixels" in io
    assert f"`{cfg['scaling']}`" in io and f"channel order: {cfg['channel_order'].upper()}" in io
    assert f"input dtype: {row['input_dtype']}" in io
    assert f"output dtype: {row['output_dtype']}" in io
    made = section(card, "How it was made")
    scheme = row["spec"]["scheme"]["name"]
    assert f"`{scheme}` (the converter's policy: {row['policy']})" in made
    assert f"`{row['source']}`" in made
    versions = section(card, "Versions")
    assert f"TensorFlow {env['tensorflow']}" in versions
    assert f"quantbench {env['quantbench']} made the run" in versions
    config = section(card, "Run configuration")
    assert (run_dir / "config.yaml").read_text().strip() in config
    # The file the card describes is the file in the folder.
    digest = hashlib.sha256((out / "int8.tflite").read_bytes()).hexdigest()
    assert digest in section(card, "Files")


def _accuracy_figures(line: str) -> tuple[float, float, float, float]:
    """(photos, accuracy %, low %, high %) from `- accuracy: 86.1% on 550 photos (95% ...)`."""
    match = re.fullmatch(r"- accuracy: ([\d.]+)% on ([\d,]+) photos \(95% interval ([\d.]+)% to "
                         r"([\d.]+)%\)", line)  # fmt: skip
    assert match, line
    acc, n, low, high = match.groups()
    return int(n.replace(",", "")), float(acc), float(low), float(high)


def test_card_follows_results_json_not_a_copy_of_the_fixture(tmp_path):
    """Other figures in results.json give other figures in the card."""
    def change(results):
        row = results.variant("int8")
        row.accuracy, row.accuracy_ci = 0.7349, [0.6951, 0.7712]
        row.latency[0].median_ms = 12.3456

    run = build_run(tmp_path / "run", mutate=change)
    export(run, tmp_path / "ship", variant="int8")
    card = (tmp_path / "ship" / CARD_FILE).read_text()
    assert "- accuracy: 73.5% on 550 photos (95% interval 69.5% to 77.1%)" in card
    assert "| 1 | xnnpack | interpreter | 12.35 |" in card


def test_a_run_without_intervals_or_environment_still_gets_a_card(tmp_path):
    """Results written before per-photo intervals (and without an environment) still export:
    the card says what is not recorded instead of failing."""
    results = make_results(photos=False)
    results.environment = None
    run = tmp_path / "run"
    run.mkdir()
    row = results.variant("int8")
    data = fake_tflite("int8", 1000)
    (run / row.path).write_bytes(data)
    row.size_bytes = len(data)
    results_mod.save(results, run)  # no config.yaml: the card shows results.json's config
    export(run, tmp_path / "ship", variant="int8")
    card = (tmp_path / "ship" / CARD_FILE).read_text()
    assert "- accuracy: 86.1% on 550 photos\n" in card
    assert "- difference from the float model (keras_float): -1.3 points (no paired interval" in card
    assert "- gzipped: not measured" in card and "is not recorded" in card
    assert "preset: smoke" in section(card, "Run configuration")


def test_recommendation_is_computed_when_the_run_stored_none(tmp_path):
    run = build_run(tmp_path / "run", stored=False)
    results = results_mod.load(run)
    assert "recommendation" not in results.extras
    expected = recommend_mod.recommend(results, RecommendConfig(**results.config["recommend"]))
    done = export(run, tmp_path / "ship")
    assert expected.chosen and done.variant == expected.chosen


def test_the_stored_recommendation_wins_over_recomputing(tmp_path):
    def stored_float16(results):
        results.config["recommend"]["objective"] = "accuracy"

    run = build_run(tmp_path / "run", mutate=stored_float16)  # stored: the most accurate
    raw = json.loads((run / "results.json").read_text())
    chosen = raw["extras"]["recommendation"]["chosen"]
    assert chosen != "dynamic_range"
    raw["config"]["recommend"]["objective"] = "size"  # a recomputation would pick dynamic_range
    (run / "results.json").write_text(json.dumps(raw))
    assert export(run, tmp_path / "ship").variant == chosen


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, words", [
    ("int16x8", "int16x8 failed to convert: 16x8 quantization does not support MEAN yet"),
    ("optimize_for_size", "optimize_for_size is byte-identical to dynamic_range"),
    ("int9", "no variant 'int9' in this run (did you mean 'int8'?)"),
    ("keras_float", "keras_float is the Keras model"),
])  # fmt: skip
def test_variants_that_cannot_be_exported_name_those_that_can(run_dir, tmp_path, name, words):
    with pytest.raises(ExportError) as info:
        export(run_dir, tmp_path / "ship", variant=name)
    assert words in info.value.message
    assert info.value.tip == "variants that can be exported: " + ", ".join(OK_VARIANTS)
    assert not (tmp_path / "ship").exists()


def test_no_recommendation_says_why_and_names_the_alternatives(tmp_path):
    def strict(results):
        results.config["recommend"] = {"max_accuracy_drop": 0.0, "max_size_mb": 0.0001}

    run = build_run(tmp_path / "run", mutate=strict)
    with pytest.raises(ExportError) as info:
        export(run, tmp_path / "ship")
    assert info.value.message.startswith("the run recommends no variant: No variant")
    assert "--variant NAME" in info.value.tip and "int8_io" in info.value.tip


def test_a_non_empty_folder_is_refused_and_force_replaces_an_earlier_export(run_dir, tmp_path):
    out = tmp_path / "ship"
    export(run_dir, out, variant="int8")
    with pytest.raises(ExportError, match="is not empty") as info:
        export(run_dir, out, variant="float16")
    assert "--force" in info.value.tip
    done = export(run_dir, out, variant="float16", force=True)
    assert done.replaced
    assert files_in(out) == sorted([CARD_FILE, LABELS_FILE, "float16.tflite"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ship.")]


def test_a_failed_replace_keeps_the_earlier_export(run_dir, tmp_path, monkeypatch):
    import errno
    import os

    from quantbench.commands import export as export_mod

    out = tmp_path / "ship"
    export(run_dir, out, variant="int8")
    before = {name: (out / name).read_bytes() for name in files_in(out)}
    real_replace = os.replace

    def replace(src, dst):
        if ".ship.export-" in str(src):  # moving the new folder into place: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(export_mod.os, "replace", replace)
    with pytest.raises(QuantbenchError, match="the disk is full"):
        export(run_dir, out, variant="float16", force=True)
    assert {name: (out / name).read_bytes() for name in files_in(out)} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ship.")] == []


def test_force_never_deletes_files_an_export_did_not_write(run_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="does not hold an earlier export only"):
        export(run_dir, out, variant="int8", force=True)
    assert files_in(out) == ["notes.txt"]
    export(run_dir, tmp_path / "ship", variant="int8")
    (tmp_path / "ship" / "notes.txt").write_text("mine too")
    with pytest.raises(ExportError, match="it also holds notes.txt"):
        export(run_dir, tmp_path / "ship", variant="int8", force=True)


def test_an_empty_folder_is_used(run_dir, tmp_path):
    (tmp_path / "ship").mkdir()
    export(run_dir, tmp_path / "ship", variant="int8")
    assert (tmp_path / "ship" / "int8.tflite").is_file()


def test_a_file_changed_after_the_run_is_refused(run_dir, tmp_path):
    (run_dir / "int8.tflite").write_bytes(b"something else")
    with pytest.raises(QuantbenchError, match="changed after the run"):
        export(run_dir, tmp_path / "ship", variant="int8")
    (run_dir / "int8.tflite").unlink()
    with pytest.raises(QuantbenchError, match="the .tflite file of int8 is missing"):
        export(run_dir, tmp_path / "ship", variant="int8")


def test_not_a_run_directory(tmp_path):
    with pytest.raises(QuantbenchError, match="no results found"):
        export(tmp_path, tmp_path / "ship")


# --- the command line -------------------------------------------------------------------------


@pytest.mark.subprocess
def test_cli_bad_variant_is_one_error_line_and_exit_2(run_dir, tmp_path):
    done = quantbench("export", str(run_dir), "--variant", "int16x8", "-o", str(tmp_path / "ship"))
    assert_clean_error(done, "ERROR int16x8 failed to convert", "tip: variants that can be "
                       "exported: float32, dynamic_range")  # fmt: skip
    assert not (tmp_path / "ship").exists()
    done = quantbench("export", str(tmp_path / "nothing"), "-o", str(tmp_path / "ship"))
    assert_clean_error(done, "no results found")


@pytest.mark.subprocess
def test_cli_exports_and_refuses_a_second_time_without_force(run_dir, tmp_path):
    out = tmp_path / "ship"
    done = quantbench("export", str(run_dir), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "exported dynamic_range (recommended)" in done.stdout
    assert (out / "dynamic_range.tflite").is_file()
    done = quantbench("export", str(run_dir), "-o", str(out))
    assert_clean_error(done, "is not empty", "--force")
    assert quantbench("export", str(run_dir), "-o", str(out), "--force").returncode == 0


# --- a real run -------------------------------------------------------------------------------


@pytest.mark.pipeline
@pytest.mark.realdata
@pytest.mark.slow
def test_export_from_a_real_smoke_run(real_keras_home, tmp_path, monkeypatch):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    import quantbench

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    _, run = quantbench.run("smoke", schemes=["float32", "int8"], output_dir=str(tmp_path / "runs"))
    rows, raw = rows_of(run)
    assert rows["int8"]["status"] == "ok"
    done = export(run, tmp_path / "ship", variant="int8")

    interpreter = Interpreter(model_path=str(done.model))
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    size = raw["config"]["data"]["image_size"]
    assert list(inp["shape"]) == [1, size, size, 3]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    interpreter.invoke()
    labels = done.labels.read_text().splitlines()
    assert labels == raw["data"]["classes"]
    assert interpreter.get_tensor(outp["index"]).shape[-1] == len(labels)

    card = done.card.read_text()
    row = rows["int8"]
    n, acc, low, high = _accuracy_figures(line_with(section(card, "Accuracy"), "- accuracy:"))
    assert acc == round(row["accuracy"] * 100, 1) and n == row["eval_images"]
    assert (low, high) == ci_points(row["accuracy_ci"])
    assert numbers(line_with(section(card, "Size"), "- file:"))[0] == row["size_bytes"]
    assert f"TensorFlow {raw['environment']['tensorflow']}" in card
    # The default: the run's recommendation, or a clear refusal when it recommends none.
    chosen = (raw["extras"].get("recommendation") or {}).get("chosen")
    if chosen:
        assert export(run, tmp_path / "default").variant == chosen
    else:
        with pytest.raises(ExportError, match="the run recommends no variant"):
            export(run, tmp_path / "default")
