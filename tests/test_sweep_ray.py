"""The Ray engine on a two-node Ray test cluster on this machine (ray.cluster_utils.Cluster):
trials land on both nodes, and no two trials measure latency on one node at the same time.

Skipped only when Ray is not installed (the `test` extra installs it). Kept small: 3 logical
CPUs in all, tiny generated photos, an untrained MobileNetV2 at 32 px, 3 timed runs."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from quantbench.commands import sweep  # noqa: E402
from quantbench.core.results import RunResults  # noqa: E402
from tests.conftest import make_image_folder  # noqa: E402

# Timing and process tests: they run alone (the serial lane of `make test`), never beside
# another test process that would take the cores they time or wait on.
pytestmark = pytest.mark.serial


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    from quantbench.commands.sweep_engines import LOCK_NAMESPACE, worker_priority

    # The head takes two trials at once (so its latency lock has work), the other node one.
    with worker_priority():
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 2, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=LOCK_NAMESPACE, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _overlaps(intervals) -> list[tuple]:
    by_node: dict[str, list] = {}
    for i in intervals:
        by_node.setdefault(i.node, []).append(i)
    bad = []
    for node, spans in by_node.items():
        spans.sort(key=lambda s: s.start)
        bad += [(node, a, b) for a, b in zip(spans, spans[1:]) if b.start < a.end]
    return bad


@pytest.mark.pipeline
@pytest.mark.slow
def test_two_node_cluster_places_trials_on_both_and_never_times_two_on_one_node(tmp_path, two_nodes):
    from quantbench.commands.sweep_engines import RayEngine

    photos = make_image_folder(tmp_path / "photos", per_class=8, size=32)
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
base:
  preset: smoke
  set: {{data.dir: {photos}, model.weights: none, data.max_images_per_class: null,
        data.image_size: 32, evaluate.threads: [1], evaluate.latency_runs: 3,
        evaluate.warmup_runs: 1, convert.schemes: [float32, dynamic_range, float16]}}
axes: {{train.seed: [1, 2, 3]}}
""")  # fmt: skip
    spec = sweep.load_spec(path)
    engine = RayEngine(cache=str(tmp_path / "store"), cpus_per_trial=1)
    assert engine.slots == 3 and len(engine.locks) == 2
    state, sweep_dir = sweep.run_sweep(spec, output_dir=tmp_path / "out", engine=engine)
    assert state.counts()["complete"] == 3, [t.error for t in state.trials]
    nodes = {t.node for t in state.trials}
    assert len(nodes) == 2, nodes  # both nodes ran trials
    intervals = [i for t in state.trials for i in t.latency_intervals]
    timed = 0
    for record in state.trials:
        results = RunResults.model_validate_json((Path(record.run_dir) / "results.json").read_text())
        timed += sum(1 for v in results.variants if v.status == "ok" and v.latency)
    # One guarded span per timed variant, plus one per figure re-measured at the end of a
    # trial because the machine was busy (stages.settle_busy holds the same per-node lock).
    assert len(intervals) >= timed > 0
    assert not _overlaps(intervals)
    for record in state.trials:
        results = RunResults.model_validate_json((Path(record.run_dir) / "results.json").read_text())
        assert {f.node for v in results.variants for f in v.latency} == {record.node}
    assert (sweep_dir / "sweep.html").is_file()


def test_overlap_check_finds_concurrent_latency_on_one_node():
    """The check above can fail: two spans that overlap on one node are reported."""
    from quantbench.commands.sweep import LatencyInterval as L

    assert _overlaps([L(node="a", start=0, end=2), L(node="a", start=1, end=3)])
    assert not _overlaps([L(node="a", start=0, end=2), L(node="b", start=1, end=3),
                          L(node="a", start=2, end=3)])  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_node_lock_held_by_a_dead_process_is_free_again():
    """A trial killed while timing (its worker gone) must not keep its node's lock forever."""
    import subprocess

    from quantbench.commands.sweep_engines import LOCK_NAMESPACE, _node_lock

    ray.init(num_cpus=1, namespace=LOCK_NAMESPACE, log_to_driver=False, include_dashboard=False)
    try:
        lock = _node_lock(ray, ray.get_runtime_context().get_node_id())
        holder = subprocess.Popen(["sleep", "60"])
        assert ray.get(lock.acquire.remote(holder.pid), timeout=30)
        # Held by a live process: another acquire waits.
        waiting = lock.acquire.remote(12345678)
        with pytest.raises(ray.exceptions.GetTimeoutError):
            ray.get(waiting, timeout=1.5)
        holder.kill()
        holder.wait()
        assert ray.get(waiting, timeout=10)  # the holder died: the waiter got it
        assert ray.get(lock.holder.remote()) == 12345678
        ray.get(lock.release.remote(999))  # only the holder releases
        assert ray.get(lock.holder.remote()) == 12345678
        ray.get(lock.release.remote(12345678))
        assert ray.get(lock.holder.remote()) is None
    finally:
        ray.shutdown()
