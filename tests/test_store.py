"""The model cache: keys, atomic and concurrent writes, damaged entries, list/clear, the CLI."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from quantbench.store import keys as fingerprint
from quantbench.cli import main
from quantbench.core.errors import StoreError
from quantbench.store import (
    SCHEMA_VERSION,
    Store,
    data_fingerprint,
    default_root,
    files_fingerprint,
    library_versions,
    machine_fingerprint,
    store_key,
)

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"tensorflow": "2.21.0", "numpy": "2.4.0"}
BASE = {"stage": "train", "params": {"epochs": 5, "lr": 1e-4, "schemes": ["int8", "float16"]},
        "parent": None, "data": "d" * 64, "versions": VERSIONS}  # fmt: skip


def key(n: int) -> str:
    return store_key("test", {"n": n}, None, None, VERSIONS)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "cache")


# --- keys and fingerprints -------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("stage", "qat"),
    ("params", {**BASE["params"], "epochs": 6}),
    ("params", {**BASE["params"], "lr": 2e-4}),
    ("params", {**BASE["params"], "schemes": ["float16", "int8"]}),  # order is meaning
    ("parent", "a" * 64),
    ("data", "e" * 64),
    ("versions", {**VERSIONS, "tensorflow": "2.22.0"}),
])  # fmt: skip
def test_key_changes_with_each_input(field, value):
    changed = store_key(**{**BASE, field: value})
    assert changed != store_key(**BASE)
    assert len(changed) == 64 and int(changed, 16) >= 0


def test_key_ignores_dict_order_and_container_type():
    params = {"lr": 1e-4, "schemes": ("int8", "float16"), "epochs": 5, "dir": Path("/data/x")}
    same = {"dir": "/data/x", "epochs": 5, "schemes": ["int8", "float16"], "lr": 0.0001}
    assert store_key("s", params, None, None, {}) == store_key("s", same, None, None, {})


def test_key_rejects_what_it_cannot_compare():
    with pytest.raises(ValueError):
        store_key("s", {"lr": float("nan")}, None, None, {})
    with pytest.raises(TypeError):
        store_key("s", {1: "int keys would collide with '1'"}, None, None, {})
    with pytest.raises(TypeError):
        store_key("s", {"x": object()}, None, None, {})


@pytest.mark.subprocess
def test_key_is_stable_across_processes():
    code = ("import json, sys; from quantbench.store import store_key; "
            "print(store_key(**json.loads(sys.argv[1])))")  # fmt: skip
    keys = set()
    for seed in ("1", "2"):  # a different str hash seed must not matter
        done = subprocess.run([sys.executable, "-c", code, json.dumps(BASE)], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed,
                                   "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
        keys.add(done.stdout.strip())
    assert keys == {store_key(**BASE)}


def test_data_fingerprint_sees_pixels_shape_dtype_and_order():
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    fp = data_fingerprint([images, np.arange(6)])
    assert fp == data_fingerprint([images.copy(), np.arange(6)])
    touched = images.copy()
    touched[3, 4, 4, 1] ^= 1
    variants = [
        [touched, np.arange(6)],
        [images.reshape(6, 4, 16, 3), np.arange(6)],  # same bytes, other shape
        [images.astype(np.int8), np.arange(6)],  # same bytes, other dtype
        [np.arange(6), images],
        [images.tobytes(), np.arange(6)],  # raw bytes are not the array
        [images[::-1], np.arange(6)],
    ]
    assert len({fp, *(data_fingerprint(v) for v in variants)}) == 1 + len(variants)
    strided = images[:, ::2]
    assert data_fingerprint([strided]) == data_fingerprint([np.ascontiguousarray(strided)])


def test_files_fingerprint_covers_names_and_contents(tmp_path):
    for name, text in [("a/1.jpg", "one"), ("a/2.jpg", "two"), ("b/3.jpg", "three")]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    paths = sorted(tmp_path.rglob("*.jpg"))
    fp = files_fingerprint(paths, tmp_path)
    assert fp == files_fingerprint(reversed(paths), tmp_path)
    assert fp == files_fingerprint([p.relative_to(tmp_path) for p in paths], tmp_path)
    (tmp_path / "b").rename(tmp_path / "c")  # a relabelled photo
    relabelled = files_fingerprint(sorted(tmp_path.rglob("*.jpg")), tmp_path)
    (tmp_path / "c" / "3.jpg").write_text("thre3")
    edited = files_fingerprint(sorted(tmp_path.rglob("*.jpg")), tmp_path)
    assert len({fp, relabelled, edited}) == 3


def test_library_versions_and_machine_fingerprint():
    versions = library_versions()
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
                 "numpy", "quantbench", "quantbench-source"):  # fmt: skip
        assert versions[name], name
    assert machine_fingerprint() == machine_fingerprint()
    assert len(machine_fingerprint()) == 24
    assert "tensorflow" not in fingerprint.machine_description()  # only what latency depends on


@pytest.mark.subprocess
def test_source_digest_follows_the_code(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "fingerprint.py").write_text(Path(fingerprint.__file__).read_text())
    (package / "train.py").write_text("EPOCHS = 5\n")

    def digest() -> str:
        code = "import fingerprint; print(fingerprint.source_digest())"
        return subprocess.run([sys.executable, "-c", code], cwd=package, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    before = digest()
    (package / "train.py").write_text("EPOCHS = 6\n")
    assert digest() != before


# --- put and get -------------------------------------------------------------------------------


def test_put_get_round_trip(store, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(os.urandom(3000))
    k = key(1)
    put = store.put(k, "train", {"model.keras": model, "notes.txt": b"trained"},
                    {"label": "float baseline", "epochs": 5})  # fmt: skip
    got = store.get(k)
    assert got is not None and got.key == k and got.stage == "train"
    assert got.meta == {"label": "float baseline", "epochs": 5} == put.meta
    assert got.path("model.keras").read_bytes() == model.read_bytes()
    assert got.path("notes.txt").read_bytes() == b"trained"
    assert got.path("model.keras").stat().st_ino != model.stat().st_ino  # stored by copy
    assert abs(got.created.timestamp() - time.time()) < 3600
    assert json.loads((got.dir / "entry.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert store.get(key(2)) is None
    with pytest.raises(KeyError):
        got.path("missing.bin")


def test_put_json_round_trip(store):
    store.put_json(key(1), "accuracy", {"accuracy": 0.846, "agreement": 1.0}, label="int8")
    assert store.get_json(key(1)) == {"accuracy": 0.846, "agreement": 1.0}
    assert store.get_json(key(2)) is None
    assert store.list()[0].label == "int8"


def test_link_or_copy_survives_the_cache_being_cleared(store, tmp_path):
    entry = store.put(key(1), "convert", {"int8.tflite": b"tflite bytes"})
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "int8.tflite").write_bytes(b"old")  # replaced, not appended to
    assert store.materialize(key(1), {"int8.tflite": run_dir / "int8.tflite"}) is not None
    assert (run_dir / "int8.tflite").stat().st_ino == entry.path("int8.tflite").stat().st_ino
    assert store.clear()[0] == 1
    assert store.get(key(1)) is None
    assert (run_dir / "int8.tflite").read_bytes() == b"tflite bytes"
    assert sorted(p.name for p in run_dir.iterdir()) == ["int8.tflite"]  # no temp file left


def test_materialize_misses(store, tmp_path):
    store.put(key(1), "convert", {"a.tflite": b"a"})
    assert store.materialize(key(2), {"a.tflite": tmp_path / "a.tflite"}) is None
    assert store.materialize(key(1), {"b.tflite": tmp_path / "b.tflite"}) is None
    assert not (tmp_path / "a.tflite").exists()


def test_second_put_of_a_key_returns_the_first(store):
    first = store.put(key(1), "train", {"m.bin": b"first"}, {"label": "first"})
    second = store.put(key(1), "train", {"m.bin": b"second"}, {"label": "second"})
    assert second.meta["label"] == "first"
    assert second.path("m.bin").read_bytes() == b"first" == first.path("m.bin").read_bytes()
    assert list(store.tmp_dir.iterdir()) == []


def _put_many(root: str, writer: int, barrier, results) -> None:
    store = Store(root)
    for n in range(25):
        barrier.wait(timeout=60)  # both writers start each key together
        payload = f"writer {writer} key {n}".encode() * 20000  # ~300 kB, a slow-ish write
        entry = store.put(key(n), "train", {"m.bin": payload}, {"writer": writer})
        results.put((writer, n, entry.meta["writer"], entry.path("m.bin").read_bytes()[:12]))


def test_concurrent_puts_of_the_same_keys(store):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_put_many, args=(str(store.root), w, barrier, results),
                           daemon=True) for w in (0, 1)]  # fmt: skip
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 120
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            if any(w.exitcode for w in workers):
                break  # a writer raised: fail now, not when the other's barrier times out
            time.sleep(0.1)
        assert [w.exitcode for w in workers] == [0, 0]
        got = [results.get(timeout=10) for _ in range(50)]
    finally:
        for w in workers:
            w.kill()
    for n in range(25):
        entry = store.get(key(n))
        assert entry is not None
        winner = entry.meta["writer"]
        assert entry.path("m.bin").read_bytes() == f"writer {winner} key {n}".encode() * 20000
        seen = [(meta, head) for _, m, meta, head in got if m == n]
        assert seen == [(winner, f"writer {winner} key {n}".encode()[:12])] * 2  # both: winner's
    assert list(store.tmp_dir.iterdir()) == []
    assert len(store.list()) == 25


def test_put_validates_its_arguments(store, tmp_path):
    with pytest.raises(ValueError):
        store.put("../../etc", "train")
    with pytest.raises(ValueError):
        store.put(key(1), "Train Stage")
    for name in ("entry.json", "../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            store.put(key(1), "train", {name: b"x"})
    with pytest.raises(FileNotFoundError):
        store.put(key(1), "train", {"m.keras": tmp_path / "missing.keras"})
    with pytest.raises(TypeError):
        store.put(key(1), "train", {}, {"when": object()})
    assert store.get(key(1)) is None


# --- damage is a miss ------------------------------------------------------------------------


def _damage_missing_json(entry):
    (entry.dir / "entry.json").unlink()


def _damage_bad_json(entry):
    (entry.dir / "entry.json").write_text('{"schema_version": 1, "key": ')


def _damage_binary_json(entry):
    (entry.dir / "entry.json").write_bytes(b"\xff\xfe\x00garbage")


def _damage_truncated_file(entry):
    entry.path("m.bin").write_bytes(b"half")


def _damage_altered_file(entry):  # same size, e.g. rewritten in place through a hard link
    entry.path("m.bin").write_bytes(b"x" * len(entry.path("m.bin").read_bytes()))


def _damage_missing_file(entry):
    entry.path("m.bin").unlink()


def _damage_wrong_key(entry):
    doc = json.loads((entry.dir / "entry.json").read_text())
    (entry.dir / "entry.json").write_text(json.dumps({**doc, "key": key(99)}))


def _damage_no_version(entry):
    doc = json.loads((entry.dir / "entry.json").read_text())
    del doc["schema_version"]
    (entry.dir / "entry.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("damage", [
    _damage_missing_json, _damage_bad_json, _damage_binary_json, _damage_truncated_file,
    _damage_altered_file, _damage_missing_file, _damage_wrong_key, _damage_no_version,
])  # fmt: skip
def test_damaged_entry_is_a_miss_and_is_removed(store, damage):
    entry = store.put(key(1), "train", {"m.bin": os.urandom(500)}, {"label": "x"})
    store.put(key(2), "train", {"m.bin": b"healthy"})
    damage(entry)
    assert store.get(key(1)) is None
    assert not entry.dir.exists()
    assert [s.key for s in store.list()] == [key(2)]
    again = store.put(key(1), "train", {"m.bin": b"fresh"})  # the key can be stored again
    assert store.get(key(1)).path("m.bin").read_bytes() == b"fresh"
    assert again.path("m.bin").read_bytes() == b"fresh"


def test_damaged_entries_are_swept_by_clear(store):
    entry = store.put(key(1), "train", {"m.bin": b"x"})
    store.put(key(2), "qat", {"m.bin": b"y"})
    _damage_bad_json(entry)
    assert [s.key for s in store.list()] == [key(2)]  # listed as nothing, still on disk
    assert entry.dir.exists()
    count, _ = store.clear(stage="qat")
    assert count == 2 and not entry.dir.exists() and store.list() == []


def test_entry_of_a_newer_schema(store):
    entry = store.put(key(1), "train", {"m.bin": b"x"}, {"label": "old"})
    doc = json.loads((entry.dir / "entry.json").read_text())
    newer = {**doc, "schema_version": SCHEMA_VERSION + 1, "signed_by": "future"}
    (entry.dir / "entry.json").write_text(json.dumps(newer))
    assert store.get(key(1)).meta == {"label": "old"}  # extra fields are ignored
    del newer["meta"]  # a layout we cannot read: a miss, but left for the newer quantbench
    (entry.dir / "entry.json").write_text(json.dumps(newer))
    assert store.get(key(1)) is None
    assert entry.dir.exists()


def test_reads_never_raise_on_a_missing_or_odd_root(tmp_path):
    assert Store(tmp_path / "nowhere").get(key(1)) is None
    assert Store(tmp_path / "nowhere").list() == []
    assert Store(tmp_path / "nowhere").clear() == (0, 0)
    (tmp_path / "file").write_text("not a folder")
    assert Store(tmp_path / "file").get(key(1)) is None
    assert Store(tmp_path / "file").list() == []


def test_machine_errors_raise_store_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError) as failed:
        Store(tmp_path / "file").put(key(1), "train", {"m.bin": b"x"})
    assert str(tmp_path / "file") in failed.value.message
    assert "machine" in failed.value.tip

    from quantbench import store as store_mod

    def disk_full(dest, source):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr(store_mod, "write_file", disk_full)
    store = Store(tmp_path / "cache")
    with pytest.raises(StoreError) as failed:
        store.put(key(1), "train", {"m.bin": b"x"})
    assert "No space left on device" in failed.value.message
    assert list(store.tmp_dir.iterdir()) == []  # the half-written entry is gone


# --- list, clear, the root -------------------------------------------------------------------


def _age_entry(store: Store, k: str, days: float) -> None:
    past = time.time() - days * 86400
    os.utime(store.entries_dir / k, (past, past))


def test_list_and_clear_by_stage_and_age(store):
    store.put(key(1), "train", {"m.bin": b"a" * 1000}, {"label": "float"})
    store.put(key(2), "convert", {"int8.tflite": b"b" * 2000}, {"label": "int8"})
    store.put(key(3), "convert", {"f16.tflite": b"c" * 3000}, {"label": "float16"})
    _age_entry(store, key(2), 10)
    listed = {s.key: s for s in store.list()}
    assert {s.stage for s in listed.values()} == {"train", "convert"}
    assert listed[key(3)].size_bytes > 3000  # the file plus entry.json
    assert store.total_size() == sum(s.size_bytes for s in listed.values())
    assert store.list()[0].key == key(2)  # least recently used first

    assert [s.key for s in store.select(older_than_days=5)] == [key(2)]
    assert store.clear(older_than_days=5) == (1, listed[key(2)].size_bytes)
    store.get(key(3))  # a use
    assert store.clear(stage="convert", older_than_days=0.5) == (0, 0)
    assert store.clear(stage="convert") == (1, listed[key(3)].size_bytes)
    assert [s.key for s in store.list()] == [key(1)]
    assert store.clear() == (1, listed[key(1)].size_bytes)
    assert store.list() == [] and store.total_size() == 0


def test_get_marks_an_entry_used(store):
    store.put(key(1), "train", {"m.bin": b"a"})
    _age_entry(store, key(1), 30)
    assert store.select(older_than_days=7)
    store.get(key(1))
    assert store.select(older_than_days=7) == []


def test_clear_sweeps_crashed_writes_only_when_stale(store):
    store.put(key(1), "train", {"m.bin": b"a"})
    crashed, writing = store.tmp_dir / "crashed", store.tmp_dir / "writing"
    for folder in (crashed, writing):
        folder.mkdir()
        (folder / "m.bin").write_bytes(b"partial")
    past = time.time() - 2 * 86400
    os.utime(crashed, (past, past))
    store.clear(stage="nothing-matches")
    assert not crashed.exists() and writing.exists()
    assert store.get(key(1)) is not None


def test_clear_leaves_foreign_files_alone(tmp_path):
    store = Store(tmp_path)  # e.g. QUANTBENCH_CACHE pointed at a folder with other things in it
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "entries").mkdir()
    (tmp_path / "entries" / "not-a-key").mkdir()
    store.put(key(1), "train", {"m.bin": b"a"})
    assert store.clear()[0] == 1
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "entries" / "not-a-key").exists()
    signature = "Signature: 8a477f597d28d172789f06886806bc55"  # the CACHEDIR.TAG standard
    assert (tmp_path / "CACHEDIR.TAG").read_text().startswith(signature)


def test_default_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QUANTBENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_root() == tmp_path / "home" / ".cache" / "quantbench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "quantbench"
    monkeypatch.setenv("QUANTBENCH_CACHE", "~/models-cache")
    assert default_root() == tmp_path / "home" / "models-cache"
    assert Store().root == tmp_path / "home" / "models-cache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUANTBENCH_CACHE", "relative")
    assert default_root() == tmp_path / "relative"


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_store(monkeypatch, tmp_path) -> Store:
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cli-cache"))
    return Store()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_cache_list(cli_store, capsys):
    code, out, _ = run(capsys, "cache", "list")
    assert code == 0 and f"the model cache at {cli_store.root} is empty" in out
    cli_store.put(key(1), "train", {"m.bin": b"a" * 2_500_000}, {"label": "[red]float[/] model"})
    cli_store.put(key(2), "convert", {"int8.tflite": b"b" * 1000})
    code, out, _ = run(capsys, "cache", "list")
    assert code == 0
    assert key(1)[:12] in out and key(2)[:12] in out and key(1)[:13] not in out
    assert "[red]float[/] model" in out  # a label is data, never markup
    assert "2.5 MB" in out
    assert f"2 entries, 2.5 MB in {cli_store.root}" in out


def test_cli_cache_clear(cli_store, capsys, monkeypatch):
    cli_store.put(key(1), "train", {"m.bin": b"a" * 1000})
    cli_store.put(key(2), "convert", {"int8.tflite": b"b" * 1000})
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    code, _, err = run(capsys, "cache", "clear")
    assert code == 2 and "ERROR would remove 2 entries" in err and "--yes" in err
    assert len(cli_store.list()) == 2  # nothing removed without consent

    code, out, _ = run(capsys, "cache", "clear", "--stage", "covnert", "--yes")
    assert code == 0 and "did you mean 'convert'?" in out and len(cli_store.list()) == 2

    code, out, _ = run(capsys, "cache", "clear", "--stage", "convert", "--yes")
    assert code == 0 and "removed 1 entry" in out
    assert [s.stage for s in cli_store.list()] == ["train"]

    code, out, _ = run(capsys, "cache", "clear", "--older-than", "3", "--yes")
    assert code == 0 and "nothing to remove" in out and len(cli_store.list()) == 1

    code, _, err = run(capsys, "cache", "clear", "--older-than", "-1")
    assert code == 2 and "ERROR" in err

    code, out, _ = run(capsys, "cache", "clear", "-y")
    assert code == 0 and "removed 1 entry" in out and cli_store.list() == []


def test_cli_cache_clear_asks_on_a_terminal(cli_store, capsys, monkeypatch):
    cli_store.put(key(1), "train", {"m.bin": b"a"})
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("click.confirm", lambda *a, **k: False)
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and "nothing removed" in out and len(cli_store.list()) == 1
    monkeypatch.setattr("click.confirm", lambda *a, **k: True)
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and "removed 1 entry" in out and cli_store.list() == []


@pytest.mark.subprocess
def test_cli_cache_does_not_import_tensorflow(tmp_path):
    Store(tmp_path).put(key(1), "train", {"m.bin": b"a"})
    code = ("import sys; from quantbench.cli import main; main(['cache', 'list']); "
            "main(['cache', 'clear', '--stage', 'qat', '--yes']); "
            "print('TF LOADED' if 'tensorflow' in sys.modules else 'NO TF')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "QUANTBENCH_CACHE": str(tmp_path),
                               "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert key(1)[:12] in done.stdout
    assert done.stdout.strip().endswith("NO TF"), done.stdout


# --- real photos -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_fingerprints_of_the_real_photos(flowers_dir, tmp_path):
    from PIL import Image

    photos = sorted(flowers_dir.glob("*/*.jpg"))
    assert len(photos) > 3000
    fp = files_fingerprint(photos, flowers_dir)
    assert fp == files_fingerprint(list(reversed(photos)), flowers_dir)
    assert fp != files_fingerprint(photos[1:], flowers_dir)
    images = [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in photos[:8]]
    store = Store(tmp_path / "cache")
    k = store_key("train", {"image_size": 64}, None, data_fingerprint(images), library_versions())
    store.put(k, "train", {"first.jpg": photos[0]}, {"label": "real photo"})
    assert store.get(k).path("first.jpg").read_bytes() == photos[0].read_bytes()
    assert k != store_key("train", {"image_size": 64}, None, data_fingerprint(images[1:]),
                          library_versions())  # fmt: skip
