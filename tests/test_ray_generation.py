"""Generation on a local Ray cluster (2 CPUs, workers of 0.5 CPU), shared by the tests of this module.

The workers run the deterministic fake generator (tests/ is put on their PYTHONPATH; every
batch sleeps $FAKE_GENERATOR_DELAY seconds), so a cluster run must give the same files,
byte for byte, as a single-process run. Faults (a raising batch, a killed or stalled worker)
are injected by item and try through ray_faults.py, and Ray's reports of a silent worker
through the driver's calls, so every outcome is asserted whatever the scheduling.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

import ray_faults
from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.errors import SynaugError
from synaug.generate import distributed, ray_cluster
from synaug.generate.distributed import generate_plan_on_ray
from synaug.generate.retry import RetryPolicy
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

FAKE = "python:fake_generator:make_generator"
FAULTY = "python:ray_faults:make_generator"
TESTS = Path(__file__).parent
CLUSTER_DELAY = "0.1"  # seconds per batch, for workers without their own runtime_env
RAY_OPTIONS = {"num_workers": 2, "cpus_per_worker": 0.5, "sampler": {"batch_size": 3}, "shards_per_worker": 4, "progress": False}
NUM_SHARDS = 8  # 2 workers x 4 shards each


@pytest.fixture(scope="module")
def fault_file(tmp_path_factory) -> Path:
    """The file the workers' FaultyGenerator reads its fault from (see ray_faults.py)."""
    return tmp_path_factory.mktemp("faults") / "faults.json"


@pytest.fixture(scope="module")
def cluster(fault_file) -> str:
    """A local 2-CPU Ray cluster for this module; yields its address."""
    with pytest.MonkeyPatch.context() as patch:  # the workers inherit the environment of the cluster
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        patch.setenv("FAKE_GENERATOR_DELAY", CLUSTER_DELAY)
        patch.setenv("RAY_FAULTS", str(fault_file))
        for tries_left in reversed(range(3)):  # Ray gives its raylet a fixed 30 s to start, which a loaded machine can miss
            try:
                ray_cluster.start_local(num_cpus=2, logging_level=logging.WARNING)
                break
            except Exception as exc:
                ray.shutdown()
                if tries_left == 0 or "timed out during startup" not in str(exc):
                    raise
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def faults(fault_file, tmp_path):
    """Set this test's fault: ``faults(seed=..., kind=..., times=...)``; returns the folder of its log. Cleared after the test."""
    def set_fault(**config) -> Path:
        ray_faults.write_faults(fault_file, tmp_path / "faults", **config)
        return tmp_path / "faults"

    yield set_fault
    fault_file.unlink(missing_ok=True)


def shard_seed(plan, shard: int, position: int = 0) -> int:
    """The seed of the ``position``-th item of ``shard`` (the plan's items are dealt to shards in turn)."""
    items = [item for number, item in enumerate(plan.rows()) if number % NUM_SHARDS == shard]
    return plan.seed_for(items[position], 0)


def shard_size(plan, shard: int) -> int:
    return sum(1 for number in range(plan.total) if number % NUM_SHARDS == shard)


def tries_of(summary, shard: int) -> list[tuple[int, str]]:
    return [(attempt.worker, attempt.outcome) for attempt in summary.attempts if attempt.shard == shard]


def wait_until_gone(pids: set[int], timeout: float = 120.0) -> None:
    """Wait until none of ``pids`` runs (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} still run"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def planned(tmp_path):
    """A plan of 85 images and the store of a single-process run of it."""
    plan = make_plan([40, 10, 0, 25], ["cat", "dog", "owl", "eel"], image_size=(8, 8), channels=3, seed=11)
    reference = tmp_path / "reference"
    generate_plan(plan, FakeGenerator(), SyntheticStore(reference), progress=False)
    return plan, reference


def pngs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob("*/*.png")}


def check_matches_reference(out: Path, reference: Path) -> None:
    """One row per image and one image per row, no image temp files, bytes identical to the reference."""
    manifest = SyntheticStore(out).manifest()
    assert not manifest.duplicated(["class_id", "group_key", "index"]).any()
    assert sorted(manifest["file"]) == sorted(pngs(out)) == sorted(pngs(reference))
    assert list(out.glob("*/*.tmp")) == []
    for name in pngs(reference):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


@ray.remote(num_cpus=0.5)
def _niceness() -> int:
    return os.nice(0)


def test_workers_of_a_local_cluster_run_at_the_drivers_priority(cluster):
    """Ray's default (workers niced by 15) lets any busy process on the machine starve generation."""
    assert ray.get(_niceness.remote()) == os.nice(0)


def test_two_workers_match_a_single_process_run_and_a_rerun_changes_nothing(cluster, planned, tmp_path):
    plan, reference = planned
    out = tmp_path / "store"
    summary = generate_plan_on_ray(plan, FAKE, out, **RAY_OPTIONS)
    assert (summary.planned, summary.already_done, summary.generated, summary.failed) == (85, 0, 85, 0)
    assert summary.num_workers == 2 and summary.workers_lost == 0 and summary.errors == []
    assert 0 < summary.startup_seconds < summary.seconds and summary.images_per_second > 0
    check_matches_reference(out, reference)
    assert list(out.glob("manifest.part-*")) == []  # merged

    before = snapshot(out)
    again = generate_plan_on_ray(plan, FAKE, out, **RAY_OPTIONS)
    assert (again.already_done, again.generated) == (85, 0)
    assert snapshot(out) == before


@pytest.mark.parametrize(("shard", "position"), [(0, 0), (1, 4)])  # the first item of the first shard; an item of a shard's second batch
def test_a_worker_killed_at_an_item_is_restarted_and_the_plan_finishes_without_duplicates(cluster, planned, faults, tmp_path, shard, position):
    plan, reference = planned
    out = tmp_path / "store"
    folder = faults(seed=shard_seed(plan, shard, position), kind="kill", times=1)
    summary = generate_plan_on_ray(plan, FAULTY, out, **RAY_OPTIONS)
    assert (tmp_path / "faults" / "try-0").exists(), "the fault never fired"
    assert summary.workers_lost == 1 and any("lost" in error for error in summary.errors)
    outcomes = [outcome for _, outcome in tries_of(summary, shard)]  # Ray reports a restarting worker as dead or as unavailable
    assert outcomes in (["lost", "done"], ["unanswered", "done"])
    assert summary.generated == 85 and summary.already_done == 0
    assert ray_faults.overlapping_runs(folder, shard_seed(plan, shard, position)) == []
    check_matches_reference(out, reference)


def test_a_shard_failing_twice_moves_to_the_other_worker_and_finishes(cluster, planned, faults, tmp_path):
    plan, reference = planned
    out = tmp_path / "store"
    faults(seed=shard_seed(plan, 3), kind="raise", times=2)
    summary = generate_plan_on_ray(plan, FAULTY, out, **RAY_OPTIONS)
    tries = tries_of(summary, 3)
    assert [outcome for _, outcome in tries] == ["failed", "failed", "done"]
    assert tries[0][0] != tries[1][0]  # the second try ran on the other worker
    assert summary.errors == [f"shard 3 on worker {w}: RuntimeError: simulated device error" for w, _ in tries[:2]]
    assert summary.retry_report() == [
        f"shard 3: failed on worker {tries[0][0]} (RuntimeError: simulated device error), "
        f"failed on worker {tries[1][0]} (RuntimeError: simulated device error), done on worker {tries[2][0]}"
    ]
    assert summary.generated == 85
    check_matches_reference(out, reference)


def test_a_shard_that_keeps_failing_is_given_up_after_its_budget(cluster, planned, faults, tmp_path):
    plan, _ = planned
    out = tmp_path / "store"
    faults(seed=shard_seed(plan, 5), kind="raise", times=100)
    with pytest.raises(SynaugError) as error:
        generate_plan_on_ray(plan, FAULTY, out, **RAY_OPTIONS, retry=RetryPolicy(attempts=3, attempts_per_worker=2))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{shard_size(plan, 5)} of 85 images are missing")
    assert message.count("failed on worker") == 3 and "re-run the same command" in message
    assert len(list((tmp_path / "faults").glob("try-*"))) == 3  # three tries in all, as the budget says


def test_a_silent_worker_keeps_its_shard_until_it_answers_so_no_shard_runs_twice_at_once(cluster, planned, faults, tmp_path, monkeypatch):
    """The race of issue 15: a worker stalls in its shard, Ray reports it unavailable, then it resumes.

    The worker stalls in shard 0's first batch until another process starts that batch or every
    other shard is recorded. A driver that hands the shard to another worker at once (as one that
    takes "unavailable" for "dead" does) makes both run it at the same time.
    """
    plan, reference = planned
    out = tmp_path / "store"
    seed = shard_seed(plan, 0)
    folder = faults(seed=seed, kind="stall", times=1, store=str(out), release_rows=plan.total - shard_size(plan, 0))
    cut_off: list = []
    real_wait, real_result = distributed._Run._wait, distributed._Run._result

    def wait(self):
        ready = real_wait(self)
        stalled = (folder / "try-0").exists()
        if stalled and not cut_off:  # report the stalled shard's call as unanswered, while the worker still runs it
            cut_off.extend(ref for ref, (call, _, shard) in self.waiting.items() if call == "shard" and shard == 0)
            ready = cut_off + [ref for ref in ready if ref not in cut_off]
        return ready

    def result(self, ref):
        if ref in cut_off:
            raise ray.exceptions.ActorUnavailableError("the test cut it off", None)
        return real_result(self, ref)

    monkeypatch.setattr(distributed._Run, "_wait", wait)
    monkeypatch.setattr(distributed._Run, "_result", result)
    summary = generate_plan_on_ray(plan, FAULTY, out, **RAY_OPTIONS)
    assert cut_off, "the worker never stalled"
    assert ray_faults.overlapping_runs(folder, seed) == []  # never in two workers at once
    assert [outcome for _, outcome in tries_of(summary, 0)] == ["unanswered", "done"]
    assert summary.generated == 85 and summary.workers_lost == 0
    check_matches_reference(out, reference)  # 0 lost, 0 duplicate, every manifest path present, same bytes


@pytest.mark.slow  # a second interpreter joins the cluster: ~20-40 s on 2 busy cores
@pytest.mark.parametrize(("shard", "position"), [(2, 0), (6, 3)])
def test_a_driver_killed_at_an_item_is_finished_by_a_rerun(cluster, planned, faults, tmp_path, shard, position):
    plan, reference = planned
    plan_file = plan.save(tmp_path / "plan.json")
    out = tmp_path / "store"
    folder = faults(seed=shard_seed(plan, shard, position), kind="stall", times=1, store=str(out), release_rows=plan.total + 1)
    command = [sys.executable, "-m", "synaug", "generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAULTY,
               "--batch-size", "3", "--ray-address", cluster, "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # a loaded machine can take minutes to start a second driver and its workers
        deadline = time.monotonic() + 300
        while not (folder / "try-0").exists():  # a worker has reached the item, and stalls there
            assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr.read()}"
            assert time.monotonic() < deadline, "the driver never reached the item"
            time.sleep(0.05)
    finally:  # also when the test fails: a driver left running would take the next test's fault
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        driver.stderr.close()
    wait_until_gone({pid for pid, _ in ray_faults.batches(folder)}, timeout=300)  # Ray ends the dead driver's workers
    assert len(SyntheticStore(out).manifest()) < plan.total
    assert main(["generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAULTY, "--batch-size", "3",
                 "--ray", "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress"]) == 0
    check_matches_reference(out, reference)


def test_a_generator_that_does_not_load_is_one_error_line(cluster, planned, tmp_path, capsys):
    plan, _ = planned
    plan_file = plan.save(tmp_path / "plan.json")
    code = main(["generate", "--plan", str(plan_file), "--out", str(tmp_path / "store"), "--generator", "python:fake_generator:missing",
                 "--ray", "--workers", "1", "--cpus-per-worker", "0.5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: module 'fake_generator' has no function 'missing'" in err and "Traceback" not in err


def test_one_worker_is_counted_in_the_singular(cluster, tmp_path, capsys):
    plan_file = make_plan([3, 0], ["cat", "dog"], image_size=(8, 8), channels=3).save(tmp_path / "plan.json")
    code = main(["generate", "--plan", str(plan_file), "--out", str(tmp_path / "store"), "--generator", FAKE,
                 "--ray", "--workers", "1", "--cpus-per-worker", "0.5", "--no-progress"])
    out = capsys.readouterr().out.replace("\n", "")
    assert code == 0 and "3 new images on 1 Ray worker in" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-shards", "2"], "drop --shard-index and --num-shards"),
        (["--workers", "5", "--cpus-per-worker", "0.5"], "room for 4 workers of 0.5 CPUs each, not 5"),
    ],
)
def test_bad_ray_options_are_one_error_line(cluster, planned, tmp_path, capsys, extra, message):
    plan, _ = planned
    plan_file = plan.save(tmp_path / "plan.json")
    code = main(["generate", "--plan", str(plan_file), "--out", str(tmp_path / "store"), "--generator", FAKE, "--ray", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error: ") and "Traceback" not in err


def test_workers_without_ray_is_an_error(planned, tmp_path, capsys):
    plan, _ = planned
    plan_file = plan.save(tmp_path / "plan.json")
    assert main(["generate", "--plan", str(plan_file), "--out", str(tmp_path / "store"), "--generator", FAKE, "--workers", "2"]) == 2
    assert "add --ray" in capsys.readouterr().err


@pytest.mark.slow  # the tiny embedded generator with guidance on both workers and in this process: ~1-2 min on 2 busy cores
def test_guided_exemplar_generation_on_ray_matches_one_process_and_survives_a_killed_worker(cluster, fault_file, faults, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from fixtures_generation import FASHION_CLASSES, build_tiny_embedded
    from fixtures_guidance import tiny_checkpoint
    from synaug.data.dataset import LabeledImages
    from synaug.generate.loading import load_generator
    from synaug.guidance import feedback_hook

    plan = make_plan([0, 9, 0, 6, 0, 0, 9, 0, 0, 0], FASHION_CLASSES, image_size=(28, 28), channels=1, seed=5)
    hooks = [feedback_hook("loss", tiny_checkpoint(tmp_path / "checkpoint", FASHION_CLASSES), every=1, class_names=FASHION_CLASSES)]
    real = LabeledImages(labels=np.repeat(np.arange(10), 2), class_names=FASHION_CLASSES,
                         images=torch.randint(0, 256, (20, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8))
    generator = str(build_tiny_embedded(tmp_path / "generator"))
    sampler = {"batch_size": 3, "steps": 4}
    monkeypatch.setenv("RAY_FAULTS", str(fault_file))
    faults(generator=generator)  # no fault yet
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' arithmetic (Ray gives a 0.5-CPU worker one thread)
    try:
        reference = tmp_path / "reference"
        generate_plan(plan, load_generator("python:ray_faults:make_embedded", **sampler), SyntheticStore(reference), hooks=hooks,
                      reference_images=real, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "store"
    faults(generator=generator, seed=shard_seed(plan, 1, 1), kind="kill", times=1)
    summary = generate_plan_on_ray(plan, "python:ray_faults:make_embedded", out, **{**RAY_OPTIONS, "sampler": sampler}, hooks=hooks,
                                   reference_images=real)
    assert (tmp_path / "faults" / "try-0").exists(), "the fault never fired"
    assert summary.workers_lost == 1 and summary.generated == plan.total
    check_matches_reference(out, reference)
    ours, theirs = SyntheticStore(out).manifest(), SyntheticStore(reference).manifest()
    assert ours["criterion"].tolist() == theirs["criterion"].tolist() and ours["exemplar"].tolist() == theirs["exemplar"].tolist()
    assert SyntheticStore(out).info["settings"] == SyntheticStore(reference).info["settings"]  # guidance and exemplars recorded alike
