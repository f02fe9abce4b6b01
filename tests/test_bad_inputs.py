"""Bad inputs and faults, one row per class (issue 15): every one ends as the README says.

Either the input is used correctly (an odd image mode decoded to the right pixels, a name
with markup characters printed as itself) or it is skipped and counted with the reason, or
the command stops with one `ERROR` line, a tip and exit code 2. Never an internal error,
never a silent wrong result. Signals are in test_signals.py.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantbench import cli
from quantbench.core.config import DataConfig
from quantbench.ml.preprocess import UnreadableImage, load_image
from tests.conftest import make_image_folder

# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def private_model_cache(tmp_path_factory):
    """The CLI's model cache defaults to ~/.cache/quantbench: this module's stay private."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real CLI entry point in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        cli.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1, err
    assert "  tip: " in err and "Traceback" not in err and "internal error" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], err


def bomb_png(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A 200-megapixel PNG in a few bytes: its header claims the size, no pixels follow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


GRADIENT16 = np.linspace(0, 65535, 64).astype(np.uint16)[None, :].repeat(64, 0)
GRADIENT8 = np.round(np.linspace(0, 65535, 64) * 255 / 65535).astype(np.uint8)


def gradient16_png(path: Path) -> Path:
    Image.fromarray(GRADIENT16).save(path)  # mode I;16
    return path


# --- 1. every image mode: the right 8-bit RGB, or skipped with the reason -------------------


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def _gray_ramp() -> np.ndarray:
    return np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))


# (file maker, expected RGB of the top-left pixel and the top row's right end; None: skipped)
MODES = {
    "1": (lambda p: _save(Image.fromarray(_gray_ramp() > 127), p / "x.png"), (0, 0, 0), (255, 255, 255)),
    "L": (lambda p: _save(Image.fromarray(_gray_ramp()), p / "x.png"), (0, 0, 0), (252, 252, 252)),
    "LA": (lambda p: _save(Image.fromarray(_gray_ramp()).convert("LA"), p / "x.png"), (0, 0, 0), (252,) * 3),
    "P": (lambda p: _save(Image.new("RGB", (64, 64), (200, 30, 60)).convert("P", palette=Image.ADAPTIVE), p / "x.png"),
          (200, 30, 60), (200, 30, 60)),  # fmt: skip
    "RGBA": (lambda p: _save(Image.new("RGBA", (64, 64), (10, 200, 30, 0)), p / "x.png"),
             (10, 200, 30), (10, 200, 30)),  # alpha dropped, as Keras' load_img does  # fmt: skip
    "CMYK": (lambda p: _save(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), p / "x.tif"),
             (255, 0, 0), (255, 0, 0)),  # fmt: skip
    "CMYK JPEG": (lambda p: _save(Image.new("CMYK", (64, 64), (255, 0, 255, 0)), p / "x.jpg"),
                  (0, 255, 0), (0, 255, 0)),  # fmt: skip
    "YCbCr": (lambda p: _save(Image.new("RGB", (64, 64), (200, 30, 60)).convert("YCbCr"), p / "x.jpg"),
              (200, 30, 60), (200, 30, 60)),  # fmt: skip
    "LAB": (lambda p: _save(Image.new("LAB", (64, 64), (255, 128, 128)), p / "x.tif"),
            (255, 255, 255), (255, 255, 255)),  # fmt: skip
    "I;16 PNG": (lambda p: gradient16_png(p / "x.png"), (0, 0, 0), (255, 255, 255)),
    "I;16 TIFF": (lambda p: _save(Image.fromarray(GRADIENT16), p / "x.tif"), (0, 0, 0), (255, 255, 255)),
    "I;16B TIFF": (lambda p: _save(Image.fromarray(GRADIENT16.astype(">u2")), p / "x.tif"),
                   (0, 0, 0), (255, 255, 255)),  # fmt: skip
    "I (16-bit values)": (lambda p: _save(Image.fromarray(GRADIENT16.astype(np.int32)), p / "x.tif"),
                          (0, 0, 0), (255, 255, 255)),  # fmt: skip
    "I (beyond 16 bits)": (lambda p: _save(Image.fromarray(np.full((8, 8), 1 << 20, np.int32)),
                                           p / "x.tif"), None, None),  # fmt: skip
    "F": (lambda p: _save(Image.fromarray(np.ones((8, 8), np.float32)), p / "x.tif"), None, None),
    "bomb": (lambda p: bomb_png(p / "x.png"), None, None),
    "truncated": (lambda p: (p / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0") and p / "x.jpg", None, None),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_decodes_right_or_is_refused(mode, tmp_path):
    make, first, last = MODES[mode]
    path = make(tmp_path)
    if first is None:
        with pytest.raises(UnreadableImage) as refused:
            load_image(path, 64)
        assert str(refused.value)  # the reason that data.py records
        return
    pixels = load_image(path, 64)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    tolerance = 3 if "JPEG" in mode or mode in ("YCbCr", "LAB") else 0
    assert np.abs(pixels[0, 0].astype(int) - first).max() <= tolerance, pixels[0, 0]
    assert np.abs(pixels[0, -1].astype(int) - last).max() <= tolerance, pixels[0, -1]


def test_sixteen_bit_gradient_stays_a_gradient(tmp_path):
    """The issue's example: a 16-bit PNG came out all white (convert('RGB') clips at 255)."""
    pixels = load_image(gradient16_png(tmp_path / "g.png"), 64)
    assert np.array_equal(pixels[0, :, 0], GRADIENT8)
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_hsv_and_premultiplied_modes_convert(tmp_path):
    """Modes no file format stores, straight through the conversion."""
    from quantbench.ml.preprocess import _to_rgb

    assert _to_rgb(Image.new("HSV", (2, 2), (85, 255, 255))).getpixel((0, 0)) == (0, 255, 0)
    assert _to_rgb(Image.new("RGBa", (2, 2), (100, 50, 20, 255))).getpixel((0, 0)) == (100, 50, 20)


@pytest.mark.realdata
def test_adobe_rgb_photo_is_converted_to_srgb(flowers_dir):
    """tf_flowers holds Adobe RGB photos: shown as sRGB, their colours are more saturated than
    the stored numbers read as sRGB."""
    import io

    from PIL import ImageCms

    for path in sorted(flowers_dir.glob("*/*.jpg")):
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # as load_image decodes
            icc = img.info.get("icc_profile")
            if icc and "Adobe RGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))):
                naive = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR))
                expected = ImageCms.profileToProfile(Image.fromarray(naive), ImageCms.ImageCmsProfile(
                    io.BytesIO(icc)), ImageCms.createProfile("sRGB"))  # fmt: skip
                break
    else:
        pytest.fail("no Adobe RGB photo found in tf_flowers")
    pixels = load_image(path, 64)
    assert np.array_equal(pixels, np.asarray(expected))
    assert np.abs(pixels.astype(int) - naive).max() > 5  # the conversion changed the colours


# --- 2, 3, 8. the data folder: names, hidden folders, links, odd files ----------------------


def nasty_folder(root: Path) -> Path:
    """Three classes whose names are markup, not UTF-8, and plain; with every odd file."""
    classes = ("[red]dogs[bold]", os.fsdecode(b"caf\xe9"), "owls")  # no "/" in a folder name
    make_image_folder(root, classes=classes, per_class=6, size=32)
    gradient16_png(root / "owls" / "sixteen_bit.png")
    bomb_png(root / "owls" / "huge[red].png")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "owls" / os.fsdecode(b"\xff\xfe[].jpg"))
    hidden = root / "owls" / ".ipynb_checkpoints"
    hidden.mkdir()
    for i in range(5):  # copies a notebook keeps: must not be used
        Image.new("RGB", (32, 32), (9, 9, 9)).save(hidden / f"copy{i}.jpg")
    (root / "owls" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "loop").symlink_to(root)  # DIR/loop -> DIR: not a class
    (root / "owls" / "up").symlink_to(root)  # a loop inside a class: not followed
    (root / "owls" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    return root


def test_data_folder_faults_are_skipped_and_counted(tmp_path):
    from quantbench.ml.data import load_dataset
    from quantbench.core.results import RunResults, load, save

    root = nasty_folder(tmp_path / "photos")
    data = load_dataset(DataConfig(dir=root, image_size=32, validation_split=0.3))
    summary = data.summary
    assert summary.classes == ["[red]dogs[bold]", "caf\\xe9", "owls"]
    # owls: 6 photos + the 16-bit one + the undecodable-named one; no hidden copies, no loops
    assert summary.class_counts == {"[red]dogs[bold]": 6, "caf\\xe9": 6, "owls": 8}
    reasons = {s.path: s.reason for s in summary.skipped}
    assert "decompression-bomb" in reasons["owls/huge[red].png"]
    assert "back into the data folder" in reasons["loop"]
    assert "back into the data folder" in reasons["owls/up"]
    assert "broken symbolic link" in reasons["owls/dangling.jpg"]
    assert not any(".ipynb" in p or "DS_Store" in p for p in reasons)
    # Every name is valid UTF-8 and round-trips through results.json.
    results = RunResults(name="x[/x]", created="now", data=summary)
    save(results, tmp_path)
    assert load(tmp_path).data.classes == summary.classes


def test_links_that_lead_outside_the_folder_are_followed(tmp_path):
    from quantbench.ml.data import load_dataset

    root = make_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=4, size=16)
    library = make_image_folder(tmp_path / "library", classes=("c",), per_class=3, size=16)
    (root / "c").symlink_to(library / "c")
    (root / "a" / "more").symlink_to(library / "c")
    data = load_dataset(DataConfig(dir=root, image_size=16, validation_split=0.3))
    assert data.summary.class_counts == {"a": 7, "b": 4, "c": 3}


def test_latency_inputs_skip_hidden_folders(tmp_path):
    from quantbench.commands.bench import load_inputs
    from quantbench.ml.preprocess import Preprocessing

    root = tmp_path / "photos"
    (root / "a" / ".ipynb_checkpoints").mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 255, 255)).save(root / "a" / "white.png")
    Image.new("RGB", (8, 8), (0, 0, 0)).save(root / "a" / ".ipynb_checkpoints" / "black.png")
    inputs = load_inputs(root, Preprocessing(8, "0..1"), count=16)
    assert len(inputs) == 1 and inputs.min() == 1.0


def test_undecodable_strings_anywhere_in_results_are_escaped_not_fatal(tmp_path):
    """A name that reached results without errors.displayable still leaves a valid file."""
    from quantbench.core.results import RunResults, load, save

    results = RunResults(name=os.fsdecode(b"run\xff"), created="now",
                         config={"data": {"dir": os.fsdecode(b"/x/\xe9")}})  # fmt: skip
    save(results, tmp_path)
    again = load(tmp_path)
    assert again.name == "run\\xff" and again.config["data"]["dir"] == "/x/\\xe9"


def test_markup_in_every_printed_name_prints_as_itself(capsys):
    """Every print site with user strings: the table, notes, recommendation, training table."""
    from quantbench.present import console
    from quantbench.analysis.recommend import attach
    from quantbench.present.sections import print_recommendation, training_table
    from quantbench.core.results import RunResults, TrainingResult, VariantResult
    from quantbench.present.table import print_results

    evil = "[/x][bold]"
    results = RunResults(name=f"run{evil}", created="now", variants=[
        VariantResult(variant=f"keras{evil}", policy=evil, kind="keras", accuracy=0.9, agreement=1.0),
        VariantResult(variant=f"v{evil}", policy=evil, accuracy=0.9, agreement=1.0, size_bytes=10,
                      notes=[f"note {evil}"]),
        VariantResult(variant=f"f{evil}", policy=evil, status="failed", error=f"boom {evil}"),
    ], training=[TrainingResult(name=f"t{evil}", seed=1)])  # fmt: skip
    print_results(results)
    print_recommendation(attach(results))
    console.out.print(training_table(results))
    console.step(f"step {evil}")
    console.warn(f"warn {evil}")
    captured = capsys.readouterr()
    for text in (f"run{evil}", f"note {evil}", f"boom {evil}", f"v{evil}"):
        assert text in captured.out.replace("\n", ""), captured.out
    assert f"step {evil}" in captured.err and f"warn {evil}" in captured.err


# --- 5, 6, 7. the command line: one ERROR line, a tip, exit 2 -------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.test_quantize import sequential_cnn

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    sequential_cnn(num_classes=3, size=32).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("bad") / "photos", per_class=6, size=32)


@pytest.fixture(scope="module")
def finished_run(tiny_model, photos, tmp_path_factory) -> Path:
    """A real quantize run (float32 only): the results file the report/compare rows damage."""
    from quantbench.api import quantize

    out = tmp_path_factory.mktemp("finished")
    _, run_dir = quantize(str(tiny_model), data=photos, schemes="float32", threads=1,
                          latency_runs=2, output_dir=out)  # fmt: skip
    return run_dir


def _results_copy(finished_run: Path, tmp: Path, change) -> Path:
    run = tmp / "damaged"
    run.mkdir()
    raw = json.loads((finished_run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps(change(raw)))
    return run


def _file(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


# name -> (arguments given (tmp, photos, model, finished run), fragments of the ERROR line)
CLI_CASES = {
    "output dir is a file": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--output-dir", _file(t, "f", b"x")],
        ["a file stands where a folder is needed", "/f"]),
    "output dir under a file": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--output-dir", _file(t, "f", b"") / "sub"],
        ["a file stands where a folder is needed"]),
    "report -o an existing folder": (
        lambda t, p, m, r: ["report", r, "-o", t], ["a folder stands where a file is to be written"]),
    "compare -o an existing folder": (
        lambda t, p, m, r: ["compare", r, "-o", t], ["a folder stands where a file is to be written"]),
    "config file is binary": (
        lambda t, p, m, r: ["run", "--config", _file(t, "c.yaml", b"\x89PNG\0\0\0\rIHDR")],
        ["is not a text file"]),
    "config file is Latin-1": (
        lambda t, p, m, r: ["run", "--config", _file(t, "c.yaml", "name: caf\xe9\n".encode("latin-1"))],
        ["is not UTF-8 text: byte 0xe9 on line 1"]),
    "config file is a folder": (lambda t, p, m, r: ["run", "--config", t], ["config file not found"]),
    "labels file is Latin-1": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--labels",
                            _file(t, "l.txt", "cats\ndogs\n\xe9\n".encode("latin-1"))],
        ["labels file", "not UTF-8 text: byte 0xe9 on line 3"]),
    "custom objects with a syntax error": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--custom-objects",
                            _file(t, "layers.py", b"class Broken(:\n    pass\n")],
        ["has a syntax error", "layers.py, line 1"]),
    "custom objects that raise on import": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--custom-objects",
                            _file(t, "layers.py", b"import tf_keras\nraise RuntimeError('no GPU')\n")],
        ["raised RuntimeError while importing: no GPU", "line 2"]),
    "results.json is a list": (
        lambda t, p, m, r: ["report", _results_copy(r, t, lambda raw: [raw])],
        ["is not a quantbench results file", "a JSON list"]),
    "results.json variants of the wrong type": (
        lambda t, p, m, r: ["report", _results_copy(r, t, lambda raw: {**raw, "variants": "all"})],
        ["is malformed: variants: Input should be a valid list"]),
    "results.json variant rows damaged, in compare": (
        lambda t, p, m, r: ["compare", r, _results_copy(r, t, lambda raw: {**raw, "variants": [{}]}),
                            "-o", t / "c.html"], ["is malformed: variants.0.variant: Field required"]),
    "results.json not JSON": (
        lambda t, p, m, r: ["report", _file(t, "results.json", b"{")], ["cannot read"]),
    "bench --image-size 0": (
        lambda t, p, m, r: ["bench", r / "float32.tflite", "--image-size", "0"],
        ["Invalid value for '--image-size'"]),
    "bench --min-seconds nan": (
        lambda t, p, m, r: ["bench", r / "float32.tflite", "--min-seconds", "nan"],
        ["--min-seconds"]),
    "bench --images 10**9": (
        lambda t, p, m, r: ["bench", r / "float32.tflite", "--images", "1000000000"],
        ["Invalid value for '--images'"]),
    "run --image-size 0": (lambda t, p, m, r: ["run", "--image-size", "0"], ["data.image_size"]),
    "quantize --image-size 0": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--image-size", "0"], ["data.image_size"]),
    "quantize --max-size nan": (
        lambda t, p, m, r: ["quantize", m, "--data", p, "--max-size", "nan"], ["max_size_mb"]),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input_is_one_clean_error(case, tiny_model, photos, finished_run, tmp_path, capsys):
    make_args, fragments = CLI_CASES[case]
    code, _, err = run_cli(capsys, *make_args(tmp_path, photos, tiny_model, finished_run))
    assert_one_error(code, err, *fragments)


@pytest.mark.subprocess
@pytest.mark.parametrize("failing", ["mkdir", "fsync"])
@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_machine_errors_say_so_and_name_the_path(failing, error, tiny_model, photos, tmp_path,
                                                 capsys, monkeypatch):  # fmt: skip
    """Read-only, full or forbidden: simulated at the OS call, since root ignores permissions."""
    out = tmp_path / "runs"
    if failing == "mkdir":
        real = os.mkdir

        def refuse(path, *args, **kwargs):
            if str(out) in os.fsdecode(path):
                raise OSError(error, os.strerror(error), os.fsdecode(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refuse)
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(error, os.strerror(error))))
    code, _, err = run_cli(capsys, "quantize", tiny_model, "--data", photos, "--output-dir", out,
                           "--schemes", "float32")  # fmt: skip
    words = {errno.EROFS: "read-only", errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied"}
    assert_one_error(code, err, words[error], str(out))


def test_full_disk_in_the_converter_is_not_a_conversion_failure():
    from quantbench.techniques.converter import _stop_if_disk_full
    from quantbench.core.errors import MachineError

    outcomes = {"float32": (1.0, None),
                "int8": (1.0, "OSError: [Errno 28] No space left on device: '/tmp/x/int8.tflite'")}
    with pytest.raises(MachineError, match="the disk is full: converting int8 into /out"):
        _stop_if_disk_full(outcomes, {"float32": "/out/float32.tflite", "int8": "/out/int8.tflite"})
    _stop_if_disk_full({"int8": (1.0, "ConverterError: op FOO is not supported")}, {"int8": "/o/x"})


@pytest.mark.subprocess
def test_nasty_names_and_files_end_to_end(tiny_model, tmp_path, capsys):
    """One `quantize` run over every data fault at once, with a markup run name and output
    folder: it completes, skips and counts what it must, and prints every name as itself."""
    root = nasty_folder(tmp_path / "photos")
    out = tmp_path / "out[/x]"
    code, stdout, err = run_cli(capsys, "quantize", tiny_model, "--data", root, "--name", "n[/x]",
                                "--output-dir", out, "--schemes", "float32", "--threads", "1",
                                "--latency-runs", "2")  # fmt: skip
    assert code == 0, err
    [run_dir] = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "complete"
    assert results["data"]["classes"] == ["[red]dogs[bold]", "caf\\xe9", "owls"]
    assert len(results["data"]["skipped"]) == 4
    assert "quantbench: n[/x]" in stdout and "out[/x]" in stdout.replace("\n", "")
    assert (run_dir / "report.html").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root, as on our CI machines): a real full disk, not a simulation."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                                            str(mount)], capture_output=True).returncode:  # fmt: skip
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.subprocess
@pytest.mark.parametrize("free_kb", [0, 20, 200])
def test_a_really_full_disk_says_so_at_every_step(free_kb, small_disk, tiny_model, photos, tmp_path):
    """0 KB: config.yaml cannot be written; 20 KB: results.json; 200 KB: the scaled images in
    TMPDIR. Each time: the disk is full, and which file."""
    from tests.test_cli import quantbench

    (small_disk / "filler").write_bytes(b"\0" * (4096 - free_kb) * 1024) if free_kb < 4096 else None
    (small_disk / "tmp").mkdir(exist_ok=True)
    done = quantbench("quantize", str(tiny_model), "--data", str(photos), "--schemes", "float32",
                      "--threads", "1", "--latency-runs", "2", "--no-cache",
                      "--output-dir", str(small_disk / "runs"),
                      env={"TMPDIR": str(small_disk / "tmp"),
                           "QUANTBENCH_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert_one_error(done.returncode, done.stderr, "the disk is full: ", str(small_disk))
    for results in (small_disk / "runs").glob("*/results.json"):
        assert json.loads(results.read_text())["status"] in ("running", "failed")
    assert not list((small_disk / "tmp").iterdir())  # scratch folders removed
