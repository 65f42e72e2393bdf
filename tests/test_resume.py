"""Kill-and-resume with real processes: `python -m synaug generate` killed with SIGKILL part-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

FAKE = "python:fake_generator:make_generator"
TESTS = Path(__file__).parent


def pngs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob("*/*.png")}


def start(plan_file: Path, out: Path, delay: float, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, FAKE_GENERATOR_DELAY=str(delay), PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "synaug", "generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE,
               "--batch-size", "3", "--no-progress", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, out: Path, images: int, timeout: float = 60.0) -> None:
    """SIGKILL ``process`` once ``out`` holds at least ``images`` PNGs."""
    deadline = time.monotonic() + timeout
    while len(pngs(out)) < images if out.is_dir() else True:
        assert process.poll() is None, f"generation ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "generation made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def rerun(plan_file: Path, out: Path, *extra: str) -> None:
    """The same command again, in this process (it is the re-run that must finish the plan)."""
    assert main(["generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE, "--batch-size", "3", "--no-progress", *extra]) == 0


def check_matches_reference(out: Path, reference: Path) -> None:
    """0 missing, 0 duplicates, rows == files, no temp files, bytes identical to the reference."""
    manifest = SyntheticStore(out).manifest()
    assert not manifest.duplicated(["class_id", "group_key", "index"]).any()
    assert sorted(manifest.loc[manifest["status"] == "ok", "file"]) == sorted(pngs(out))
    assert pngs(out) == pngs(reference)
    assert [p for p in out.rglob("*.tmp")] == []
    for name in pngs(reference):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.fixture
def planned(tmp_path) -> tuple[Path, Path, int]:
    """A plan file and the store of an uninterrupted in-process run of it."""
    plan = make_plan([40, 10, 0, 25], ["cat", "dog", "owl", "eel"], image_size=(8, 8), channels=3, seed=11)
    plan_file = plan.save(tmp_path / "plan.json")
    reference = tmp_path / "reference"
    generate_plan(plan, FakeGenerator(), SyntheticStore(reference), progress=False)
    return plan_file, reference, plan.total


def test_sigkill_part_way_then_rerun_gives_the_uninterrupted_result(planned, tmp_path):
    plan_file, reference, total = planned
    out = tmp_path / "store"
    kill_when(start(plan_file, out, delay=0.1), out, images=total // 3)
    assert 0 < len(SyntheticStore(out).manifest()) < total  # it really stopped part-way
    rerun(plan_file, out)
    check_matches_reference(out, reference)


@pytest.mark.slow  # two interpreters starting at once on 2 cores: ~10-30 s depending on load
def test_one_of_two_concurrent_shard_writers_killed_then_rerun(planned, tmp_path):
    plan_file, reference, total = planned
    shard_size = (total + 1) // 2
    out = tmp_path / "store"
    first = start(plan_file, out, 0.3, "--shard-index", "0", "--num-shards", "2")  # slow: still running when the second ends
    second = start(plan_file, out, 0.02, "--shard-index", "1", "--num-shards", "2")
    kill_when(first, out, images=total - shard_size + 6, timeout=120)
    finish(second)
    assert len(SyntheticStore(out).manifest()) < total
    rerun(plan_file, out, "--shard-index", "0", "--num-shards", "2")
    check_matches_reference(out, reference)
    assert list(out.glob("manifest.part-*")) == []  # merged by the last run's compaction
