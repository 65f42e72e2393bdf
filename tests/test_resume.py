"""Kill-and-resume with real processes: `python -m synaug generate` killed with SIGKILL part-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan
from synaug.plan.planner import SynthesisPlan

FAKE = "python:fake_generator:make_generator"
TESTS = Path(__file__).parent


def pngs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob("*/*.png")}


def start(plan_file: Path, out: Path, delay: float, *extra: str, batch_size: str | None = "3", **env_vars: str) -> subprocess.Popen:
    """`synaug generate` of the fake generator in a new process (``batch_size`` None: the generator's default)."""
    env = dict(os.environ, FAKE_GENERATOR_DELAY=str(delay), PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    env.update(env_vars)
    batch = [] if batch_size is None else ["--batch-size", batch_size]
    command = [sys.executable, "-m", "synaug", "generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE,
               *batch, "--no-progress", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def rerun(plan_file: Path, out: Path, *extra: str, batch_size: str | None = "3") -> None:
    """The same command again, in this process (it is the re-run that must finish the plan)."""
    batch = [] if batch_size is None else ["--batch-size", batch_size]
    assert main(["generate", "--plan", str(plan_file), "--out", str(out), "--generator", FAKE, *batch, "--no-progress", *extra]) == 0


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


def kill_when_blocked(process: subprocess.Popen, out: Path, blocked: Path, rows: int) -> None:
    """SIGKILL ``process`` once the fake generator blocked (it created ``blocked``) and ``out`` records ``rows`` images."""
    deadline = time.monotonic() + 120
    while not blocked.exists() or len(SyntheticStore(out).manifest()) < rows:
        assert process.poll() is None, f"generation ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"the process did not block with {rows} images recorded"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def test_sigkill_part_way_then_rerun_gives_the_uninterrupted_result(planned, tmp_path):
    plan_file, reference, total = planned
    out, blocked = tmp_path / "store", tmp_path / "blocked"
    at = list(SynthesisPlan.load(plan_file).rows())[30]  # the first item of the 11th batch of 3
    process = start(plan_file, out, 0.0, FAKE_GENERATOR_BLOCK_AT=str(SynthesisPlan.load(plan_file).seed_for(at, 0)),
                    FAKE_GENERATOR_BLOCKED_FILE=str(blocked))
    kill_when_blocked(process, out, blocked, rows=30)
    assert len(SyntheticStore(out).manifest()) == 30  # it really stopped part-way, keeping every finished batch
    rerun(plan_file, out)
    check_matches_reference(out, reference)


@pytest.mark.slow  # two interpreters starting at once on 2 cores: ~10-30 s depending on load
def test_one_of_two_concurrent_shard_writers_killed_then_rerun(planned, tmp_path):
    plan_file, reference, total = planned
    plan = SynthesisPlan.load(plan_file)
    first_shard = [item for position, item in enumerate(plan.rows()) if position % 2 == 0]
    out, blocked = tmp_path / "store", tmp_path / "blocked"
    # the first writer stops for good at its third batch (its item 6), so it is still running when the second ends
    first = start(plan_file, out, 0.0, "--shard-index", "0", "--num-shards", "2", FAKE_GENERATOR_BLOCK_AT=str(plan.seed_for(first_shard[6], 0)),
                  FAKE_GENERATOR_BLOCKED_FILE=str(blocked))
    second = start(plan_file, out, 0.0, "--shard-index", "1", "--num-shards", "2")
    finish(second)
    kill_when_blocked(first, out, blocked, rows=total - len(first_shard) + 6)
    assert len(SyntheticStore(out).manifest()) == total - len(first_shard) + 6
    rerun(plan_file, out, "--shard-index", "0", "--num-shards", "2")
    check_matches_reference(out, reference)
    assert list(out.glob("manifest.part-*")) == []  # merged by the last run's compaction


def store_files(root: Path) -> dict[str, bytes]:
    """Every file a user sees in a store (hidden ones aside), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def test_sigkill_in_the_second_batch_keeps_the_first_and_the_rerun_generates_the_rest(planned, tmp_path, capsys):
    plan_file, reference, total = planned
    plan = SynthesisPlan.load(plan_file)
    batch = FakeGenerator().batch_size  # the generator's default batch size
    second_batch_start = list(plan.rows())[batch]
    out, blocked = tmp_path / "store", tmp_path / "blocked"
    process = start(plan_file, out, 0.0, batch_size=None, FAKE_GENERATOR_BLOCK_AT=str(plan.seed_for(second_batch_start, 0)),
                    FAKE_GENERATOR_BLOCKED_FILE=str(blocked))
    kill_when_blocked(process, out, blocked, rows=batch)  # in batch 2, batch 1 recorded meanwhile
    assert len(SyntheticStore(out).manifest()) == batch
    capsys.readouterr()
    rerun(plan_file, out, batch_size=None)
    printed = capsys.readouterr().out.replace("\n", " ")
    assert f"{total - batch} new images" in printed and f"{batch} were done already" in printed
    check_matches_reference(out, reference)
    pd.testing.assert_frame_equal(SyntheticStore(out).manifest(), SyntheticStore(reference).manifest())
    assert store_files(out) == store_files(reference)  # byte for byte, the manifest and store.json included
