"""`quantbench bench MODEL.tflite`, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_image_folder

FAST = ["--runs", "5", "--min-seconds", "0.02", "--warmup-runs", "1"]


def quantbench(*args: str):
    return subprocess.run([sys.executable, "-m", "quantbench", "bench", *map(str, args)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)  # fmt: skip


def assert_clean_error(done, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.subprocess
def test_json_is_one_document_on_stdout(tiny_models):
    done = quantbench(tiny_models["int8_io"], "--json", "--threads", "1,2", *FAST)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # nothing but the document on stdout
    assert [r["threads"] for r in report["results"]] == [1, 2]
    assert all(r["delegate"] == "xnnpack" and r["runs"] >= 5 for r in report["results"])
    assert "random" in report["inputs"] and "int8" in report["inputs"]
    assert report["input_dtype"] == "int8" and report["device"]
    assert report["delegated_ops"] < report["ops"]
    assert any("SOFTMAX" in n for n in report["notes"])


@pytest.mark.subprocess
def test_table_with_both_delegates(tiny_models):
    done = quantbench(tiny_models["float32"], "--threads", "1", "--delegates", "xnnpack,none",
                      *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "xnnpack" in done.stdout and "none" in done.stdout and "median" in done.stdout
    assert "random inputs, uniform in -1..1" in done.stdout


@pytest.mark.subprocess
def test_real_images_from_a_folder(tiny_models, tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=3)
    done = quantbench(tiny_models["float32"], "--json", "--threads", "1", "--data", folder,
                      "--images", "4", *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["inputs"].startswith("4 images from")
    assert report["results"][0]["inputs"] == report["inputs"]


@pytest.mark.subprocess
@pytest.mark.realdata
def test_real_photos(tiny_models, flowers_dir):
    done = quantbench(tiny_models["int8"], "--json", "--threads", "1", "--data", flowers_dir, *FAST)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"].startswith("16 images from")


@pytest.mark.subprocess
def test_missing_file(tmp_path):
    assert_clean_error(quantbench(tmp_path / "nope.tflite"), "model file not found")


@pytest.mark.subprocess
def test_not_a_tflite_file(tmp_path):
    (tmp_path / "model.tflite").write_text("not a model")
    assert_clean_error(quantbench(tmp_path / "model.tflite"), "is not a TF Lite model")


@pytest.mark.subprocess
def test_damaged_tflite_file(tiny_models, tmp_path):
    (tmp_path / "cut.tflite").write_bytes(tiny_models["int8"].read_bytes()[:600])
    assert_clean_error(quantbench(tmp_path / "cut.tflite"), "LiteRT cannot open")


@pytest.mark.subprocess
@pytest.mark.parametrize("threads", ["a,b", "0", "1,-1"])
def test_bad_thread_list(tiny_models, threads):
    assert_clean_error(quantbench(tiny_models["float32"], "--threads", threads), "bad thread list")


@pytest.mark.subprocess
def test_bad_delegate_list(tiny_models):
    assert_clean_error(quantbench(tiny_models["float32"], "--delegates", "gpu"), "bad delegate")


@pytest.mark.subprocess
def test_image_size_must_match_the_model(tiny_models):
    done = quantbench(tiny_models["float32"], "--image-size", "64")
    assert_clean_error(done, "does not match the model's input 32x32")
