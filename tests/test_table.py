"""The terminal table and a failure's one-line reason: no TensorFlow, constructed results.

The table is rendered the way the CLI prints it, on a recording console of a given width, and
read back as text: no line longer than the console, every row on one line, no name cut.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from quantbench.analysis.errors import event_line, failure_reason, plain_error
from quantbench.core import results as results_mod
from quantbench.core.results import RunResults, VariantResult
from quantbench.present import table as table_mod
from quantbench.present.table import (
    COLUMNS,
    DEFAULT_COLUMNS,
    natural_width,
    parse_columns,
    print_results,
    table_view,
)
from tests.fixtures_results import make_results, make_wide_results

# --- what the converter and the runtime really say ------------------------------------------

SOFTMAX = (
    'ConverterError: <unknown>:0: error: loc(callsite(callsite(fused["Softmax:", "mobilenet_v2_0.'
    '35_128/quant_head_predictions/Softmax@__inference_serve_132759"] at fused["StatefulPartition'
    'edCall:", "StatefulPartitionedCall@__inference_signature_wrapper_133031"]) at fused["Statefu'
    'lPartitionedCall:", "StatefulPartitionedCall_1"])): \'tfl.softmax\' op failed to verify that '
    "input and output must have same element type\n"
    '<unknown>:0: note: loc(fused["StatefulPartitionedCall:", "StatefulPartitionedCall_1"]): '
    "called from\n"
    '<unknown>:0: note: loc(callsite(fused["Softmax:", "mobilenet_v2_0.35_128/quant_head_predict'
    'ions/Softmax@__inference_serve_132759"] at fused["StatefulPartitionedCall:", "StatefulPartit'
    'ionedCall_1"])): see current operation: %385 = "tfl.softmax"(%384) <{beta = 1.000000e+00 : '
    "f32}> : (tensor<1x5x!quant.uniform<i16:f32, 3.0517578125E-5>>) -> tensor<1x5xf32>\n"
    "<unknown>:0: error: Failed to quantize the model"
)
LEGALIZE = (
    "ConverterError: Could not translate MLIR to FlatBuffer.\n"
    '<unknown>:0: error: loc(callsite(fused["TensorListReserve:", "sequential/lstm/TensorArrayV2'
    '@__inference_serve_5121"] at fused["StatefulPartitionedCall:", "StatefulPartitionedCall_1"]'
    ")): failed to legalize operation 'tf.TensorListReserve' that was explicitly marked illegal\n"
    '<unknown>:0: note: loc(fused["StatefulPartitionedCall:", "StatefulPartitionedCall_1"]): '
    "called from"
)
NOT_YET = "RuntimeError: Quantization not yet supported for op: 'CUSTOM'."
NOT_YET_16X8 = "RuntimeError: Quantization to 16x8-bit not yet supported for op: 'MEAN'."
SEGFAULT = ("LiteRT failed while scoring qat_finetune_int16x8.tflite (killed by SIGSEGV): Fatal "
            "Python error: Segmentation fault")  # fmt: skip
FLEX = (
    '<unknown>:0: error: loc(callsite(fused["Svd:", "model/singular_values/Svd@__inference_serve_'
    '99"] at fused["StatefulPartitionedCall:", "StatefulPartitionedCall_1"])): \'tf.Svd\' op is '
    "neither a custom op nor a flex op\n"
    "<unknown>:0: error: failed while converting: 'main': \n"
    "Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback "
    "using TF Select.\nTF Select ops: Svd\nDetails:\n\ttf.Svd(tensor<?x14x14x4xf32>) -> "
    "(tensor<?x14x4xf32>)"
)


@pytest.mark.parametrize("error, words", [
    (SOFTMAX, "tfl.softmax needs the same type in and out"),
    (LEGALIZE, "tf.TensorListReserve has no TF Lite equivalent"),
    (NOT_YET, "the quantizer does not support CUSTOM yet"),
    (NOT_YET_16X8, "16x8 quantization does not support MEAN yet"),
    (SEGFAULT, "LiteRT crashed (SIGSEGV) while scoring qat_finetune_int16x8.tflite"),
    (FLEX, "tf.Svd has no TF Lite builtin (it needs TF Select ops)"),
    ("latency worker for /runs/r/int8.tflite failed (killed by SIGKILL): ",
     "LiteRT was killed (SIGKILL) while timing int8.tflite"),
    ("converter process failed (no answer in 900 s)", "the converter hung (no answer in 900 s)"),
    ("RuntimeError: tensorflow/lite/kernels/elementwise.cc:88 Type INT16 is unsupported by op "
     "Rsqrt.Node number 34 (RSQRT) failed to prepare.", "Rsqrt has no INT16 kernel"),
    # rows written when the message was cut at 400 characters, inside its sentence
    (SOFTMAX.splitlines()[0][:400], "tfl.softmax needs the same type in and out"),
    # a location whose brackets never close (cut, or elided by hand)
    ('ConverterError: <unknown>:0: error: loc(callsite(fused["Softmax:", "m/Softmax@__inference_'
     'serve_132759"] ... \'tfl.softmax\' op failed to verify that input and output must have same '
     "element type", "tfl.softmax needs the same type in and out"),
    # AEQ's schemes start from the float32 file: its failure, said after theirs
    ("no float32 file to start from: " + SOFTMAX,
     "no float32 file to start from: tfl.softmax needs the same type in and out"),
    ("boom [/x][bold]", "boom [/x][bold]"),  # an unknown message keeps its own words
    ("ValueError: ", "ValueError (no message)"),
    (None, "no reason recorded"),
])  # fmt: skip
def test_plain_error_is_the_first_meaningful_message_in_words(error, words):
    summary = plain_error(error)
    assert summary == words
    assert "\n" not in summary and "loc(" not in summary and "@__inference" not in summary


def test_plain_error_drops_locations_from_a_message_no_rule_knows():
    error = ('<unknown>:0: error: loc(callsite(fused["X:", "m/x@__inference_serve_7"] at fused'
             '["StatefulPartitionedCall:", "S_1"])): something odd happened\n<unknown>:0: note: x')
    assert plain_error(error) == "something odd happened"
    assert len(plain_error("RuntimeError: " + "long words " * 100)) <= 160


def _failed_qat(error: str = SOFTMAX) -> VariantResult:
    from quantbench.core.specs import TechniqueSpec, VariantSpec

    spec = VariantSpec(transforms=(TechniqueSpec(name="qat", params={"recipe": "finetune"}),),
                       scheme=TechniqueSpec(name="int16x8"))  # fmt: skip
    return VariantResult(variant="qat_finetune_int16x8", source="qat_finetune", spec=spec,
                         scheme="int16x8", policy="int16 activations, int8 weights",
                         status="failed", error=error, convert_seconds=2.0)  # fmt: skip


def test_failure_reason_names_the_scheme_and_the_model():
    assert failure_reason(_failed_qat()) == ("int16x8 cannot convert this QAT model: tfl.softmax "
                                             "needs the same type in and out")  # fmt: skip
    plain = VariantResult(variant="int16x8", scheme="int16x8", policy="p", status="failed",
                          error=NOT_YET_16X8)  # fmt: skip
    assert failure_reason(plain) == ("int16x8 cannot convert this model: 16x8 quantization does "
                                     "not support MEAN yet")  # fmt: skip
    # A file was made and measuring it failed: what failed, no "cannot convert".
    crashed = VariantResult(variant="qat_finetune_int16x8", source="qat_finetune",
                            scheme="int16x8", policy="p", status="failed", error=SEGFAULT,
                            path="qat_finetune_int16x8.tflite", size_bytes=1000)  # fmt: skip
    assert failure_reason(crashed) == plain_error(SEGFAULT)
    # The QAT model itself could not be made: every row of it says so, not "cannot convert".
    untrained = _failed_qat("ModelError: QAT cannot wrap layer 'scale' (ScaleLayer)")
    untrained.convert_seconds = None
    assert failure_reason(untrained) == ("the qat_finetune model failed: ModelError: QAT cannot "
                                         "wrap layer 'scale' (ScaleLayer)")  # fmt: skip


def test_warning_events_are_one_line(capsys):
    from quantbench.present import show_event

    show_event("warn", f"qat_finetune_int16x8 failed to convert: {SOFTMAX}")
    show_event("warn", f"int8: {SEGFAULT}")
    show_event("warn", "preset 'article' is now called 'article'")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "WARNING qat_finetune_int16x8 failed to convert: tfl.softmax needs the same type in and "
        "out",
        "WARNING int8: LiteRT crashed (SIGSEGV) while scoring qat_finetune_int16x8.tflite",
        "WARNING preset 'article' is now called 'article'",
    ]
    assert event_line("no error here") == "no error here"


def test_error_line_keeps_the_whole_message():
    from quantbench.techniques.convert import _error_line

    class ConverterError(Exception):
        pass

    text = _error_line(ConverterError(SOFTMAX.removeprefix("ConverterError: ")))
    assert text == SOFTMAX  # every line, every location: results.json keeps it all
    huge = _error_line(RuntimeError("x" * 50_000))
    assert len(huge) < 20_100 and huge.endswith("(30000 more characters)")


# --- the table --------------------------------------------------------------------------------


def default_run() -> RunResults:
    """A default-preset run as it looks: 8 schemes on the float model and on its QAT fine-tune
    (16 files, 2 Keras rows), the deprecated aliases byte-identical to dynamic range, and
    int16x8 of the QAT model refused by the converter in MLIR."""
    results = make_wide_results()
    for source in ("", "qat_finetune_"):
        for alias in ("optimize_for_size", "optimize_for_latency"):
            row = results.variant(source + alias)
            row.status, row.identical_to = "identical", source + "dynamic_range"
            row.notes.append(f"the same model as {source}dynamic_range: the scheme had no effect "
                             "(the files differ at most in the converter's record of the options)")
    failed = results.variant("qat_finetune_int16x8")
    index = results.variants.index(failed)
    results.variants[index] = _failed_qat().model_copy(update={"id": failed.id})
    return results


def render(results: RunResults, width: int, **options) -> list[str]:
    console = Console(width=width, record=True)
    print_results(results, console=console, **options)
    return console.export_text().splitlines()


def _table_lines(lines: list[str], results: RunResults) -> list[str]:
    """The table's own lines: from the title to the last row."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"quantbench: {results.name}"))
    after = ("left out", "--wide", "rows under", "±", "failed ", "note ")
    end = next((i for i, ln in enumerate(lines) if i > start and ln.startswith(after)), len(lines))
    return lines[start:end]


def _row_line(lines: list[str], label: str, figure: str) -> str:
    """The one line of the row labelled `label` (indented under its group line)."""
    matches = [ln for ln in lines if ln.strip().split("  ")[0] == label]
    assert len(matches) == 1, (label, lines)
    assert figure in matches[0], (label, figure, matches[0])
    return matches[0]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_default_table_fits_the_console_one_line_per_row_no_name_cut(width):
    results = default_run()
    lines = render(results, width)
    table = _table_lines(lines, results)
    assert max(len(ln) for ln in table) <= width, "\n".join(table)
    header = table[1]
    for text in ("variant", "size MB", "accuracy %", "Δ pts [95% CI]", "latency ms (1t)"):
        assert text in header
    assert ("runs on" in header) == (width >= 100)
    # grouped by model: a line per model, then its rows named by their scheme
    starts = [i for i, ln in enumerate(table) if ln.strip() in ("float", "qat_finetune")]
    assert [table[i].strip() for i in starts] == ["float", "qat_finetune"]
    sections = {"float": table[starts[0] : starts[1]], "qat_finetune": table[starts[1] :]}
    for v in results.rows(0):
        section = sections[v.source]
        label = "keras" if v.kind == "keras" else v.variant.removeprefix("qat_finetune_")
        if v.status == "failed":
            _row_line(section, label, "failed")
            continue
        # all of the row's figures on its one line, its name in full
        line = _row_line(section, label, f"{v.size_bytes / 1e6:.2f}")
        assert f"{v.accuracy * 100:.1f} ±" in line
        assert ("= dynamic_range" in line) == (v.status == "identical")
    assert not any("qat_finetune_" in ln for ln in table)  # no row repeats its model's prefix
    after = lines[lines.index(table[-1]) + 1 :]
    if width < 100:
        assert "left out to fit 80 columns: runs_on (--columns picks, --wide shows all)" in after
    else:
        assert any(ln.startswith("--wide adds policy, gzip") for ln in after)
    assert "rows under a model are named model_row, e.g. qat_finetune_float32" in after


def test_a_failed_row_says_why_once_in_plain_words():
    results = default_run()
    lines = render(results, 100)
    text = "\n".join(lines)
    reason = ("failed qat_finetune_int16x8: int16x8 cannot convert this QAT model: tfl.softmax "
              "needs the same type in and out")  # fmt: skip
    assert reason in lines  # one line, however long
    assert text.count("tfl.softmax") == 1
    assert "loc(" not in text and "<unknown>" not in text and "__inference" not in text
    # the identical rows: one line per file they reproduce, not a note each
    notes = " ".join(ln.rstrip() for ln in lines)
    assert ("note optimize_for_size, optimize_for_latency: the same model as dynamic_range (the "
            "scheme had no effect)") in notes  # fmt: skip
    assert not any("the files differ at most" in ln for ln in lines)


def test_the_full_message_stays_in_results_json(tmp_path):
    results = default_run()
    results_mod.save(results, tmp_path)
    again = results_mod.load(tmp_path)
    assert again.variant("qat_finetune_int16x8").error == SOFTMAX


def test_wide_shows_every_column_unfolded():
    results = default_run()
    lines = render(results, 100, wide=True)
    header = next(ln for ln in lines if ln.startswith("variant"))
    for text in ("policy", "gzip MB", "zeros %", "values/ch", "agreement %", "p",
                 "latency ms (1t)", "latency ms (2t)", "convert s", "runs on"):
        assert text in header
    assert len(header.rstrip()) > 100  # wider than the console: printed as is, not folded
    float_rows = lines[: next(i for i, ln in enumerate(lines) if ln.strip() == "qat_finetune")]
    line = _row_line(float_rows, "int8", "int8 weights and activations, float I/O")
    assert "mcu tpu int" in line and "6.10" in line and "3.81" in line


def test_columns_pick_and_order_the_table():
    results = default_run()
    view = table_view(results, columns=parse_columns("delta,Size,runs-on"), width=60)
    assert [c.header for c in view.table.columns] == ["variant", "Δ pts [95% CI]", "size MB",
                                                      "runs on"]  # fmt: skip
    assert view.left_out == [] and view.more == []
    from quantbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown table column 'sise' \\(did you mean 'size'"):
        parse_columns("variant,sise")


def test_narrow_consoles_drop_the_least_important_columns_first():
    results = default_run()
    widths = {}
    for width in (40, 50, 60, 70, 80):
        view = table_view(results, width=width)
        widths[width] = view.left_out
        assert natural_width(view.table) <= width or len(view.left_out) == 5
    assert widths[80] == ["runs_on"]
    assert widths[70] == ["runs_on", "accuracy"]
    assert widths[50][:3] == ["runs_on", "accuracy", "latency"]


def test_a_run_of_one_model_names_rows_in_full():
    results = make_results(qat=False, photos=True)
    lines = render(results, 80)
    for v in results.rows(0):
        assert any(ln.split("  ")[0].strip() == v.variant for ln in lines), v.variant
    assert not any(ln.startswith("rows under a model") for ln in lines)


def test_cli_column_names_are_the_tables():
    from quantbench.cli.measure import TABLE_COLUMNS

    assert TABLE_COLUMNS == tuple(COLUMNS)
    assert set(DEFAULT_COLUMNS) <= set(COLUMNS) and set(table_mod.DROP_ORDER) <= set(COLUMNS)


def test_console_honours_columns_when_not_a_terminal(monkeypatch):
    from quantbench.present.console import _width

    class Pipe:
        def isatty(self):
            return False

    monkeypatch.delenv("COLUMNS", raising=False)
    assert _width(Pipe()) == 160
    monkeypatch.setenv("COLUMNS", "100")
    assert _width(Pipe()) is None  # rich reads COLUMNS itself
    assert Console(width=_width(Pipe()), file=__import__("io").StringIO()).width == 100


def test_report_prints_the_table_with_the_columns_asked_for(tmp_path, capsys, monkeypatch):
    from quantbench.cli import main
    from tests.fixtures_results import make_run_dir

    run_dir = make_run_dir(tmp_path / "run", default_run())
    main(["report", str(run_dir), "--columns", "size,delta"])
    out = capsys.readouterr().out
    header = next(ln for ln in out.splitlines() if ln.startswith("variant"))
    assert header.split() == ["variant", "size", "MB", "Δ", "pts", "[95%", "CI]"]
    assert "recommended" in out or "no variant fits" in out
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--columns", "sise"])  # refused before anything runs
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "ERROR unknown table column 'sise' (did you mean 'size'?)" in err
