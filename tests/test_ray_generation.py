"""Generation on a local Ray cluster (2 CPUs, workers of 0.5 CPU), shared by the tests of this module.

The workers run the deterministic fake generator (tests/ is put on their PYTHONPATH; every
batch sleeps $FAKE_GENERATOR_DELAY seconds), so a cluster run must give the same files,
byte for byte, as a single-process run.
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

from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.generate.distributed import generate_plan_on_ray
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

FAKE = "python:fake_generator:make_generator"
TESTS = Path(__file__).parent
CLUSTER_DELAY = "0.1"  # seconds per batch, for workers without their own runtime_env
RAY_OPTIONS = {"num_workers": 2, "cpus_per_worker": 0.5, "sampler": {"batch_size": 3}, "shards_per_worker": 4, "progress": False}


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local 2-CPU Ray cluster for this module; yields its address."""
    with pytest.MonkeyPatch.context() as patch:  # the workers inherit the environment of the cluster
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        patch.setenv("FAKE_GENERATOR_DELAY", CLUSTER_DELAY)
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


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


def test_a_killed_worker_is_restarted_and_the_plan_finishes_without_duplicates(cluster, planned, tmp_path):
    plan, reference = planned
    out = tmp_path / "store"
    killed: list[int] = []

    def kill_one_worker(progress) -> None:
        if not killed and progress.done >= 15 and progress.workers:
            killed.append(progress.workers[0].pid)
            os.kill(killed[0], signal.SIGKILL)

    summary = generate_plan_on_ray(
        plan, FAKE, out, **RAY_OPTIONS, runtime_env={"env_vars": {"FAKE_GENERATOR_DELAY": "0.3"}},
        on_progress=kill_one_worker, poll_seconds=0.1,
    )
    assert killed, "the run ended before a worker could be killed"
    assert summary.workers_lost == 1 and "worker lost" in summary.errors[0]
    assert summary.generated == 85 and summary.already_done == 0
    check_matches_reference(out, reference)


class FailsOnceGenerator(FakeGenerator):
    """The fake generator, but its first batch in each process raises (as a transient CUDA error would)."""

    failed_in_this_process = False

    def _generate_batch(self, prompts, seeds, **options):
        if not FailsOnceGenerator.failed_in_this_process:
            FailsOnceGenerator.failed_in_this_process = True
            raise RuntimeError("simulated device error")
        return super()._generate_batch(prompts, seeds, **options)


def make_fails_once_generator(**options) -> FailsOnceGenerator:
    """Factory for ``python:test_ray_generation:make_fails_once_generator``."""
    return FailsOnceGenerator(batch_size=options.get("batch_size", 8))


def test_a_shard_that_raises_is_retried_and_its_error_collected(cluster, planned, tmp_path):
    plan, reference = planned
    out = tmp_path / "store"
    summary = generate_plan_on_ray(plan, "python:test_ray_generation:make_fails_once_generator", out, **RAY_OPTIONS)
    assert summary.generated == 85
    assert summary.errors and all(error.endswith("RuntimeError: simulated device error") for error in summary.errors)
    check_matches_reference(out, reference)


@pytest.mark.slow  # a second interpreter joins the cluster: ~20-40 s on 2 busy cores
def test_a_killed_driver_is_finished_by_a_rerun(cluster, planned, tmp_path):
    plan, reference = planned
    plan_file = plan.save(tmp_path / "plan.json")
    out = tmp_path / "store"
    command = [sys.executable, "-m", "synaug", "generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE,
               "--batch-size", "3", "--ray-address", cluster, "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.is_dir() or len(pngs(out)) < 20:
        assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr.read()}"
        assert time.monotonic() < deadline, "the driver made no progress"
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    count = -1
    while count != len(pngs(out)):  # Ray stops the dead driver's workers; wait until no file appears
        count = len(pngs(out))
        time.sleep(2)
    assert count < plan.total
    assert main(["generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE, "--batch-size", "3",
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
