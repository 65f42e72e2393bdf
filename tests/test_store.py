"""The synthetic store and the plan runner, with a deterministic test generator."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fake_generator import FakeGenerator
from synaug.data.dataset import LabeledImages
from synaug.data.folders import load_image_folder
from synaug.errors import SynaugError
from synaug.generate.runner import generate_plan
from synaug.generate.store import ImageRecord, SyntheticStore
from synaug.plan import make_plan

NAMES = ["T-shirt/top", "T-shirt_top", "bag", "Bag"]


def small_plan(**options):
    options.setdefault("image_size", (6, 5))
    options.setdefault("channels", 1)
    return make_plan([9, 4, 2, 7], NAMES, **options)


def pngs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob("*/*") if p.suffix == ".png"}


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def file_bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in sorted(pngs(root))}


def check_consistent(root: Path) -> pd.DataFrame:
    """Rows == files on disk, no duplicates, no temp files; returns the manifest."""
    manifest = SyntheticStore(root).manifest()
    ok = manifest[manifest["status"] == "ok"]
    assert sorted(ok["file"]) == sorted(pngs(root))
    assert not manifest.duplicated(["class_id", "group_key", "index"]).any()
    assert temps(root) == []
    return manifest


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---- runner and store on the happy path ------------------------------------------------
def test_generate_writes_every_image_and_a_row_each(tmp_path):
    plan = small_plan()
    summary = generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), batch_size=4, progress=False)
    assert (summary.planned, summary.generated, summary.failed, summary.already_done) == (plan.total, plan.total, 0, 0)
    manifest = check_consistent(tmp_path / "s")
    assert len(manifest) == plan.total == 5 + 7 + 2
    # distinct folders for names that sanitise alike (also ignoring case)
    assert {f.split("/")[0] for f in manifest["file"]} == {"T-shirt_top-1", "bag", "Bag-3"}
    row = manifest.iloc[0]
    assert (row["class_name"], row["index"], row["attempt"], row["status"], row["generator_id"]) == ("T-shirt_top", 0, 0, "ok", "fake")
    assert row["seed"] == plan.seed_for(next(plan.rows()))
    assert row["plan_digest"] == plan.digest() and '"steps":1' in row["settings"]
    assert pd.isna(row["group_id"]) and row["criterion"] == pytest.approx(row["seed"] % 1000 / 1000)
    with Image.open(tmp_path / "s" / row["file"]) as image:
        assert image.mode == "L" and image.size == (5, 6)


def test_images_depend_only_on_prompt_and_seed_not_on_batching(tmp_path):
    plan = small_plan()
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "a"), batch_size=1, progress=False)
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "b"), batch_size=5, progress=True)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_rerunning_a_finished_plan_generates_nothing(tmp_path):
    plan = small_plan()
    store = SyntheticStore(tmp_path / "s")
    generate_plan(plan, FakeGenerator(), store, progress=False)
    generator = FakeGenerator()
    summary = generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), progress=False)
    assert generator.calls == [] and summary.generated == 0 and summary.already_done == plan.total


def test_store_loads_as_synthetic_dataset_and_plain_image_folder(tmp_path):
    plan = make_plan([9, 4, 2], ["cat", "dog", "owl"], image_size=(6, 5), channels=3)
    store = SyntheticStore(tmp_path / "s")
    generate_plan(plan, FakeGenerator(), store, progress=False)
    data = store.load()
    assert not data.in_memory and data.is_synthetic.all() and data.groups is None
    assert data.class_counts().tolist() == [0, 5, 7]
    memory = store.load(in_memory=True)
    assert memory.images.shape == (12, 3, 6, 5)
    # labels follow a dataset's class order, so the synthetic set concatenates with the real one
    real = LabeledImages(labels=np.array([0, 1, 2]), class_names=["owl", "cat", "dog", "bee"], images=torch.zeros(3, 3, 6, 5, dtype=torch.uint8))
    mapped = store.load(class_names=real.class_names, in_memory=True)
    assert mapped.class_counts().tolist() == [7, 0, 5, 0]
    # per_class (in plan class order) keeps each class's first images by plan index
    first = store.load(class_names=real.class_names, in_memory=True, per_class=[0, 2, 3])
    assert first.class_counts().tolist() == [3, 0, 2, 0]
    kept = sorted(Path(f).relative_to(tmp_path / "s").as_posix() for f in store.load(per_class=[0, 2, 3]).files)
    assert kept == ["dog/000000.png", "dog/000001.png", "owl/000000.png", "owl/000001.png", "owl/000002.png"]
    combined = real.concat(mapped)
    assert combined.is_synthetic.tolist() == [False] * 3 + [True] * 12
    with pytest.raises(SynaugError) as error:
        store.load(class_names=["cat", "dog"])
    assert "'owl'" in one_line(error)
    # the only folders are class folders; the manifest files sit beside them
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == ["dog", "owl"]
    folder = load_image_folder(tmp_path / "s", size=(6, 5))
    assert folder.class_names == ["dog", "owl"] and folder.class_counts().tolist() == [5, 7]


def test_group_plans_store_group_labels(tmp_path):
    plan = make_plan([[3, 1], [0, 2]], ["cat", "dog"], group_names=["land", "water/sea"], image_size=(4, 4), channels=1)
    store = SyntheticStore(tmp_path / "s")
    generate_plan(plan, FakeGenerator(), store, progress=False)
    manifest = check_consistent(tmp_path / "s")
    assert set(manifest["file"]) == {"cat/water_sea_000000.png", "cat/water_sea_000001.png", "dog/land_000000.png",
                                     "dog/land_000001.png", "dog/land_000002.png", "dog/water_sea_000000.png"}
    assert set(zip(manifest["group_id"], manifest["group_name"])) == {(1, "water/sea"), (0, "land")}
    data = store.load(group_names=["water/sea", "land"])
    assert data.cell_counts().tolist() == [[2, 0], [1, 3]]


def test_shards_are_disjoint_and_together_make_the_whole_plan(tmp_path):
    plan = small_plan()
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "whole"), progress=False)
    sizes = []
    for shard in range(3):
        sizes.append(generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "sharded"), shard_index=shard, num_shards=3, progress=False).generated)
    assert sum(sizes) == plan.total and min(sizes) >= plan.total // 3
    check_consistent(tmp_path / "sharded")
    assert file_bytes(tmp_path / "sharded") == file_bytes(tmp_path / "whole")
    with pytest.raises(SynaugError):
        generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "x"), shard_index=3, num_shards=3)


# ---- retries and failures -----------------------------------------------------------
def test_bad_image_is_retried_once_with_a_new_seed_then_recorded_as_failed(tmp_path):
    plan = small_plan()
    items = list(plan.rows())
    flaky, broken = items[1], items[4]
    bad = {plan.seed_for(flaky, 0), plan.seed_for(broken, 0), plan.seed_for(broken, 1)}
    store = SyntheticStore(tmp_path / "s")
    summary = generate_plan(plan, FakeGenerator(bad_seeds=bad), store, batch_size=3, progress=False)
    assert (summary.retried, summary.failed, summary.generated) == (2, 1, plan.total - 1)
    manifest = check_consistent(tmp_path / "s").set_index(["class_id", "index"])
    flaky_row = manifest.loc[(flaky.class_id, flaky.index)]
    assert (flaky_row["attempt"], flaky_row["status"], flaky_row["seed"]) == (1, "ok", plan.seed_for(flaky, 1))
    broken_row = manifest.loc[(broken.class_id, broken.index)]
    assert (broken_row["attempt"], broken_row["status"]) == (1, "failed") and pd.isna(broken_row["file"])
    assert len(store.load()) == plan.total - 1
    # failures are recorded, so a re-run does not try them again
    generator = FakeGenerator(bad_seeds=bad)
    assert generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), progress=False).generated == 0
    assert generator.calls == []


# ---- bad input and failures while writing --------------------------------------------------
def test_store_made_by_another_plan_or_generator_is_refused(tmp_path):
    plan = small_plan()
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), progress=False)
    cases = [
        (small_plan(seed=1), FakeGenerator(), "different plan"),
        (plan, FakeGenerator(steps=2), "other generator settings (steps: 1 -> 2)"),
    ]
    other = FakeGenerator()
    other.generator_id = "sd:other"
    cases.append((plan, other, "generator 'fake', not 'sd:other'"))
    for new_plan, generator, needle in cases:
        with pytest.raises(SynaugError) as error:
            generate_plan(new_plan, generator, SyntheticStore(tmp_path / "s"), progress=False)
        message = one_line(error)
        assert needle in message and "new --out folder" in message and "--overwrite" in message
    store = SyntheticStore(tmp_path / "s")
    store.clear()
    generate_plan(small_plan(seed=1), FakeGenerator(), store, progress=False)
    assert len(check_consistent(tmp_path / "s")) == plan.total


def test_non_store_folders_are_not_filled_or_cleared(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SynaugError) as error:
        generate_plan(small_plan(), FakeGenerator(), SyntheticStore(tmp_path / "mine"), progress=False)
    assert "not empty" in one_line(error)
    with pytest.raises(SynaugError):
        SyntheticStore(tmp_path / "mine").clear()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_every_store_file_follows_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        generate_plan(small_plan(), FakeGenerator(), SyntheticStore(tmp_path / "s"), progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert modes["store.json"] == modes["manifest.parquet"] == 0o644 and set(modes.values()) == {0o644}


def test_unwritable_output_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SynaugError) as error:
        generate_plan(small_plan(), FakeGenerator(), SyntheticStore(blocker / "store"), progress=False)
    assert "cannot write to output folder" in one_line(error) and "--out" in str(error.value)


def test_read_only_output_folder_is_a_one_line_error(tmp_path):
    """A folder nobody may write in: mode 0o500 for a normal user; as root, who ignores modes, /proc,
    where no folder can be made (so this runs in CI, which runs as root, too)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    parent = folder if os.geteuid() != 0 else Path("/proc")
    try:
        with pytest.raises(SynaugError) as error:
            generate_plan(small_plan(), FakeGenerator(), SyntheticStore(parent / "synaug-store"), progress=False)
        assert f"cannot write to output folder {parent / 'synaug-store'}" in one_line(error)
    finally:
        folder.chmod(0o700)
    assert not (parent / "synaug-store").exists()


def _failing_save(after_calls: int):
    """A PNG save that writes half the image and then fails as a full disk does, from call ``after_calls`` on."""
    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, format=None, **params):
        calls["n"] += 1
        if calls["n"] <= after_calls:
            return real_save(self, fp, format, **params)
        fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_write_failure_mid_image_leaves_no_partial_file(tmp_path, monkeypatch):
    plan = small_plan()
    store = SyntheticStore(tmp_path / "s").open(plan, "fake", {})
    monkeypatch.setattr(Image.Image, "save", _failing_save(0))
    item = next(plan.rows())
    with pytest.raises(SynaugError) as error:
        store.write_image(item, torch.zeros(1, 6, 5, dtype=torch.uint8))
    message = one_line(error)
    assert "No space left on device" in message and "re-run" in message
    assert pngs(tmp_path / "s") == set() and temps(tmp_path / "s") == []


def test_write_failure_during_a_run_keeps_rows_and_files_consistent_and_resumes(tmp_path, monkeypatch):
    plan = small_plan()
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "clean"), progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", _failing_save(6))
        with pytest.raises(SynaugError):
            generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), batch_size=4, progress=False)
    manifest = check_consistent(tmp_path / "s")
    assert len(manifest) == 6  # the batch that failed still recorded the images it wrote
    summary = generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), batch_size=4, progress=False)
    assert summary.generated == plan.total - 6
    check_consistent(tmp_path / "s")
    assert file_bytes(tmp_path / "s") == file_bytes(tmp_path / "clean")


# ---- resume and many writers ----------------------------------------------------------
class _InterruptedGenerator(FakeGenerator):
    """Raises KeyboardInterrupt (as Ctrl-C does) in its ``on_call``-th generate call."""

    def __init__(self, on_call: int):
        super().__init__()
        self.on_call = on_call

    def _generate_batch(self, prompts, seeds, **options):
        if len(self.calls) + 1 == self.on_call:
            raise KeyboardInterrupt
        return super()._generate_batch(prompts, seeds, **options)


def test_ctrl_c_mid_run_records_every_batch_it_wrote(tmp_path):
    plan = small_plan()
    with pytest.raises(KeyboardInterrupt):
        generate_plan(plan, _InterruptedGenerator(on_call=3), SyntheticStore(tmp_path / "s"), batch_size=4, progress=False)
    assert len(check_consistent(tmp_path / "s")) == 8  # both finished batches, the one still being written too
    summary = generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), batch_size=4, progress=False)
    assert (summary.already_done, summary.generated) == (8, plan.total - 8)
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "clean"), progress=False)
    assert file_bytes(tmp_path / "s") == file_bytes(tmp_path / "clean")


def test_resume_removes_leftovers_of_killed_runs_only_for_pending_items(tmp_path):
    plan = small_plan()
    root = tmp_path / "s"
    generate_plan(plan, FakeGenerator(), SyntheticStore(root), shard_index=0, num_shards=2, progress=False)
    items = list(plan.rows())
    store = SyntheticStore(root)
    # leftovers of a killed writer of shard 1: a finished image without a row, a temp file
    orphan = root / store.file_for(items[1])
    orphan.write_bytes(b"stale")
    temp = orphan.with_name(f".{items[3].index:06d}.png.0123456789ab.tmp")
    temp.write_bytes(b"half")
    before = file_bytes(root)
    generate_plan(plan, FakeGenerator(), SyntheticStore(root), shard_index=1, num_shards=2, progress=False)
    check_consistent(root)
    assert orphan.read_bytes() != b"stale" and not temp.exists()
    assert all(file_bytes(root)[k] == v for k, v in before.items() if k != orphan.relative_to(root).as_posix())


def test_concurrent_writers_parts_union_deduplicate_and_compact(tmp_path):
    plan = small_plan()
    items = list(plan.rows())
    first, second = SyntheticStore(tmp_path / "s").open(plan, "fake", {}), SyntheticStore(tmp_path / "s").open(plan, "fake", {})
    image = torch.zeros(1, 6, 5, dtype=torch.uint8)
    first.append([ImageRecord(items[0], 11, 0, first.write_image(items[0], image), {"criterion": 0.5, "margin": 2.0})])
    second.append([ImageRecord(items[0], 11, 0, second.write_image(items[0], image)), ImageRecord(items[1], 12, 1, None)])
    second.append([ImageRecord(items[1], 13, 1, second.write_image(items[1], image))])
    parts = sorted(p.name for p in (tmp_path / "s").glob("manifest.part-*.parquet"))
    assert len(parts) == 3 and len({p.split("-")[1] for p in parts}) == 2  # one id per writer
    manifest = first.manifest()
    assert len(manifest) == 2
    assert manifest["status"].tolist() == ["ok", "ok"]  # the ok row of item 1 wins over its failure
    assert "score_margin" in manifest.columns
    first.compact()
    assert list((tmp_path / "s").glob("manifest.part-*")) == []
    compacted = second.manifest()
    pd.testing.assert_frame_equal(compacted, manifest)


# ---- durability without cross-node locks -------------------------------------------------
def _rows(store: SyntheticStore, items, seed: int) -> None:
    """Append a failed row for each of ``items`` as a part file of ``store``."""
    store.append([ImageRecord(item, seed, 1, None) for item in items])


def test_a_compaction_that_runs_inside_another_loses_no_row(tmp_path, monkeypatch):
    from synaug.generate import manifest

    plan = small_plan()
    items = list(plan.rows())
    writers = [SyntheticStore(tmp_path / "s").open(plan, "fake", {}) for _ in range(3)]
    _rows(writers[0], items[:5], 1)
    writers[0].compact()
    _rows(writers[0], items[5:8], 1)
    real_read = manifest._read_or_none
    interleaved = []

    def read_then_let_others_work(path):
        table = real_read(path)
        if not interleaved:  # in the middle of the first compaction's reads: another writer appends and compacts
            interleaved.append(path.name)
            _rows(writers[2], items[8:12], 2)
            writers[1].compact()
            _rows(writers[2], items[12:14], 2)
        return table

    monkeypatch.setattr(manifest, "_read_or_none", read_then_let_others_work)
    writers[0].compact()
    monkeypatch.undo()
    assert interleaved and len(writers[0].manifest()) == 14  # nothing dropped, whichever compaction won
    writers[2].compact()
    names = sorted(p.name for p in (tmp_path / "s").iterdir() if p.name.startswith("manifest"))
    assert names == ["manifest.parquet"] and len(writers[1].manifest()) == 14


def test_each_writer_uses_its_own_temp_names_and_fsyncs_folders_after_renames(tmp_path, monkeypatch):
    from synaug.generate import manifest

    events = []
    real_replace, real_link, real_fsync = os.replace, os.link, manifest.fsync_folder
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", Path(a).name, Path(b).name)), real_replace(a, b))[1])
    monkeypatch.setattr(os, "link", lambda a, b: (events.append(("link", Path(a).name, Path(b).name)), real_link(a, b))[1])
    monkeypatch.setattr(manifest, "fsync_folder", lambda path: (events.append(("fsync", Path(path).name)), real_fsync(path))[1])
    plan = small_plan()
    stores = [SyntheticStore(tmp_path / "s") for _ in range(2)]
    for store in stores:
        generate_plan(plan, FakeGenerator(batch_size=3), store, shard_index=stores.index(store), num_shards=2, progress=False)
    temps_used = [e[1] for e in events if e[0] in ("rename", "link") and e[2].startswith("manifest")]
    assert len(temps_used) == len(set(temps_used)) > 4  # parts and compactions: no temp name used twice
    assert {name.rsplit(".", 2)[1][:12] for name in temps_used} == {s.writer_id for s in stores}
    for position, event in enumerate(events):
        if event[0] in ("rename", "link") and event[2].startswith("manifest"):
            assert ("fsync", "s") in events[position + 1 : position + 3], event  # the top folder, right after
    first_part = next(i for i, e in enumerate(events) if e[0] == "rename" and e[2].startswith("manifest.part-"))
    image_folders = {e[1] for e in events[:first_part] if e[0] == "fsync"} - {"s"}
    assert image_folders and image_folders <= {p.name for p in (tmp_path / "s").iterdir() if p.is_dir()}


def test_resume_leaves_a_running_writers_files_alone_and_removes_a_dead_ones(tmp_path):
    plan = small_plan()
    items = list(plan.rows())
    root = tmp_path / "s"
    running, dead = SyntheticStore(root).open(plan, "fake", {}), SyntheticStore(root).open(plan, "fake", {})
    image = torch.zeros(1, 6, 5, dtype=torch.uint8)
    finished = root / running.write_image(items[0], image)  # renamed into place, its row not appended yet
    live_temp = finished.with_name(f".{items[1].index:06d}.png.{running.writer_id}.tmp")
    dead_temp = finished.with_name(f".{items[2].index:06d}.png.{dead.writer_id}.tmp")
    live_temp.write_bytes(b"being written")
    dead_temp.write_bytes(b"half")
    dead.close()  # as a killed process's lock is released
    assert SyntheticStore(root).open(plan, "fake", {}).discard_unfinished(items[:3]) == 1
    assert finished.is_file() and live_temp.is_file() and not dead_temp.exists()
    running.close()
    assert SyntheticStore(root).open(plan, "fake", {}).discard_unfinished(items[:3]) == 1 and not live_temp.exists()


def test_a_file_system_without_hard_links_is_refused_and_one_without_locks_warned_about(tmp_path, monkeypatch):
    import fcntl

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    with monkeypatch.context() as patch:
        patch.setattr(os, "link", no_links)
        with pytest.raises(SynaugError) as error:
            SyntheticStore(tmp_path / "a").open(small_plan(), "fake", {})
    assert "cannot hard-link or rename files" in one_line(error) and "--out" in str(error.value)

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="file locks do not work"):
        summary = generate_plan(small_plan(), FakeGenerator(), SyntheticStore(tmp_path / "b"), progress=False)
    assert summary.generated == small_plan().total
    check_consistent(tmp_path / "b")
