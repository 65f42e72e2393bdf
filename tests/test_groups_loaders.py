"""Group-annotated loaders on small files in the real formats: Waterbirds, UTKFace, NICO++, group CSVs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_writers import write_image

from synaug.data import LabeledImages

from synaug.data.groups import (
    group_cells,
    load_image_folder_with_groups,
    load_nico,
    load_utkface,
    load_waterbirds,
    parse_utkface_name,
)
from synaug.data.registry import DATASET_KINDS, load_dataset
from synaug.errors import SynaugError


# ---- Waterbirds ---------------------------------------------------------------------------
def _waterbirds(root, rows, header="img_id,img_filename,y,split,place,place_filename"):
    """metadata.csv as WILDS ships it (extra img_id/place_filename columns) plus the listed images."""
    lines = [header]
    for i, (name, y, split, place) in enumerate(rows):
        lines.append(f"{i + 1},{name},{y},{split},{place},/l/lake/natural/00000{i}.jpg")
        if not name.startswith("missing"):
            write_image(root / name)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


ROWS = [
    ("001.Black_footed_Albatross/a.jpg", 1, 0, 1),
    ("001.Black_footed_Albatross/b.jpg", 1, 0, 0),
    ("002.Laysan_Albatross/c.jpg", 1, 1, 1),
    ("010.Red_winged_Blackbird/d.jpg", 0, 0, 0),
    ("010.Red_winged_Blackbird/e.jpg", 0, 2, 1),
]


def test_waterbirds_splits_classes_and_cells(tmp_path):
    root = _waterbirds(tmp_path, ROWS)
    train = load_waterbirds(root, "train", size=8)
    assert train.class_names == ["landbird", "waterbird"] and train.group_names == ["land", "water"]
    assert train.labels.tolist() == [1, 1, 0] and train.groups.tolist() == [1, 0, 0]
    assert [f.name for f in train.files] == ["a.jpg", "b.jpg", "d.jpg"]
    cells, names = group_cells(train)
    assert names == ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    assert cells.tolist() == [3, 2, 0]
    assert len(load_waterbirds(root, "val")) == 1 and load_waterbirds(root, "test").groups.tolist() == [1]
    assert load_dataset("waterbirds", root, split="test", size=8).load(0).shape == (3, 8, 8)


@pytest.mark.parametrize(
    "row, message",
    [
        (("x/a.jpg", 2, 0, 0), "y '2'"),
        (("x/a.jpg", 1, 3, 0), "split '3'"),
        (("x/a.jpg", 1, 0, "lake"), "place 'lake'"),
        (("missing/a.jpg", 1, 0, 0), "not a file"),
        (("../outside.jpg", 1, 0, 0), "not relative"),
    ],
)
def test_waterbirds_malformed_rows_name_the_row(tmp_path, row, message):
    root = _waterbirds(tmp_path, [ROWS[0], row])
    with pytest.raises(SynaugError, match=f"row 3 of .*{message}") as error:
        load_waterbirds(root, "train")
    assert "\n" not in str(error.value)


def test_waterbirds_missing_columns_split_and_file(tmp_path):
    with pytest.raises(SynaugError, match="metadata.csv does not exist"):
        load_waterbirds(tmp_path)
    _waterbirds(tmp_path, ROWS[:1], header="img_id,img_filename,y,split,place_filename")
    with pytest.raises(SynaugError, match="lacks the column.*place"):
        load_waterbirds(tmp_path)
    with pytest.raises(SynaugError, match="no split 'dev'"):
        load_waterbirds(tmp_path, "dev")
    (tmp_path / "metadata.csv").write_text("img_filename,y,split,place\na.jpg,1\n")
    with pytest.raises(SynaugError, match="row 2 .*too few fields"):
        load_waterbirds(tmp_path)


# ---- UTKFace ------------------------------------------------------------------------------
FACES = ["25_0_2_20170116174525125.jpg.chip.jpg", "61_1_0_20170109150557335.jpg.chip.jpg",
         "8_1_4_20170109201626911.jpg.chip.jpg", "40_0_1_20170117134639254.jpg"]


def _faces(root, names):
    for name in names:
        write_image(root / name, color=(100, 100, 100))
    return root


def test_utkface_targets_sensitive_attributes_and_age_bins(tmp_path):
    root = _faces(tmp_path, FACES)
    data = load_utkface(root)  # gender by race
    order = [f.name for f in data.files]
    expect = {name: parse_utkface_name(name) for name in FACES}
    assert data.class_names == ["male", "female"] and data.group_names == ["White", "Black", "Asian", "Indian", "Others"]
    assert data.labels.tolist() == [expect[n][1] for n in order]
    assert data.groups.tolist() == [expect[n][2] for n in order]
    by_age = load_utkface(root, target="age", sensitive="gender", age_bins=[0, 20, 40, 60, 120])
    assert by_age.class_names == ["0-19", "20-39", "40-59", "60-119"]
    ages = {25: 1, 61: 3, 8: 0, 40: 2}
    assert by_age.labels.tolist() == [ages[expect[n][0]] for n in [f.name for f in by_age.files]]
    assert by_age.groups.tolist() == [expect[n][1] for n in [f.name for f in by_age.files]]
    race_by_age = load_utkface(root, target="race", sensitive="age", age_bins=[0, 30, 120])
    assert race_by_age.group_names == ["0-29", "30-119"] and race_by_age.num_classes == 5
    assert load_dataset("utkface", root).cell_counts().sum() == 4


def test_utkface_malformed_names_error_or_skip_with_a_count(tmp_path):
    root = _faces(tmp_path, FACES + ["61_1_20170109142408075.jpg.chip.jpg", "30_0_7_20170109142408075.jpg"])
    with pytest.raises(SynaugError, match="'(61_1_20170109142408075.jpg.chip.jpg|30_0_7_20170109142408075.jpg)' is not age_gender_race") as error:
        load_utkface(root)
    assert "skip_malformed" in str(error.value) and "\n" not in str(error.value)
    with pytest.warns(UserWarning, match="skipped 2 UTKFace files"):
        assert len(load_utkface(root, skip_malformed=True)) == 4


def test_utkface_bad_options(tmp_path):
    root = _faces(tmp_path, FACES)
    with pytest.raises(SynaugError, match="both 'race'"):
        load_utkface(root, target="race", sensitive="race")
    with pytest.raises(SynaugError, match="target 'smile' is unknown"):
        load_utkface(root, target="smile")
    with pytest.raises(SynaugError, match="increasing"):
        load_utkface(root, target="age", age_bins=[0, 40, 20])
    with pytest.raises(SynaugError, match="outside the age bins"):
        load_utkface(root, target="age", age_bins=[10, 30, 50])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynaugError, match="no UTKFace images"):
        load_utkface(tmp_path / "empty")


# ---- NICO++ -------------------------------------------------------------------------------
def test_nico_both_layouts_give_the_same_cells(tmp_path):
    files = [("autumn", "bear", "1.jpg"), ("autumn", "bear", "2.jpg"), ("autumn", "car", "3.jpg"),
             ("rock", "car", "4.jpg"), ("rock", "car", "nested/5.jpg")]
    for context, cls, name in files:
        write_image(tmp_path / "cc" / context / cls / name)
        write_image(tmp_path / "kc" / cls / context / name)
    by_context = load_nico(tmp_path / "cc")
    by_class = load_nico(tmp_path / "kc", layout="class/context")
    for data in (by_context, by_class):
        assert data.class_names == ["bear", "car"] and data.group_names == ["autumn", "rock"]
        assert data.cell_counts().tolist() == [[2, 0], [1, 2]]
    assert len(load_dataset("nico", tmp_path / "cc")) == 5


def test_nico_errors(tmp_path):
    with pytest.raises(SynaugError, match="unknown NICO\\+\\+ layout"):
        load_nico(tmp_path, layout="class")
    with pytest.raises(SynaugError, match="no images under"):
        load_nico(tmp_path)
    write_image(tmp_path / "autumn" / "stray.jpg")
    with pytest.raises(SynaugError, match="stray.jpg is not inside a context/class folder"):
        load_nico(tmp_path)


# ---- image folders with a group CSV -------------------------------------------------------
def _tree(root):
    for path in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/sub/d.png"):
        write_image(root / path)
    return root


def test_image_folder_with_group_csv(tmp_path):
    root = _tree(tmp_path / "tree")
    csv = tmp_path / "groups.csv"
    csv.write_text("path,group\ncat/a.png,indoor\ncat/b.png,outdoor\n./dog/c.png,indoor\ndog/sub/d.png,outdoor\n")
    data = load_image_folder_with_groups(root, csv, size=8)
    assert data.class_names == ["cat", "dog"] and data.group_names == ["indoor", "outdoor"]
    assert data.cell_counts().tolist() == [[1, 1], [1, 1]]


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,group\ncat/a.png,x\n", "lacks the column.*path"),
        ("path,group\ncat/a.png,x\ncat/a.png,y\n", "row 3 .*second time"),
        ("path,group\ncat/a.png,\n", "row 2 .*empty group"),
        ("path,group\ncat/zzz.png,x\n", "row 2 .*not a file"),
        ("path,group\ncat/a.png,x\ncat/b.png,x\ndog/c.png,x\n", "1 images have no row .*dog/sub/d.png"),
    ],
)
def test_group_csv_errors(tmp_path, content, message):
    root = _tree(tmp_path / "tree")
    (root / "notes.txt").write_text("not an image")
    csv = tmp_path / "groups.csv"
    csv.write_text(content)
    with pytest.raises(SynaugError, match=message):
        load_image_folder_with_groups(root, csv)


def test_group_csv_row_for_a_file_outside_the_class_folders(tmp_path):
    root = _tree(tmp_path / "tree")
    (root / "notes.txt").write_text("x")
    csv = tmp_path / "groups.csv"
    rows = "".join(f"{p},g\n" for p in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/sub/d.png", "notes.txt"))
    csv.write_text("path,group\n" + rows)
    with pytest.raises(SynaugError, match="names notes.txt, which is not an image of a class folder"):
        load_image_folder_with_groups(root, csv)


def test_new_kinds_are_registered_and_cells_need_groups():
    assert {"waterbirds", "utkface", "nico", "spurious-fashion-mnist"} <= set(DATASET_KINDS)
    ungrouped = LabeledImages(labels=np.zeros(1), class_names=["a"], images=torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(SynaugError, match="has no group labels"):
        group_cells(ungrouped)


def test_a_csv_that_is_not_utf8_is_a_one_line_error(tmp_path):
    root = _tree(tmp_path / "tree")
    csv = tmp_path / "groups.csv"
    csv.write_bytes("path,group\ncat/a.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SynaugError, match="not a readable UTF-8 CSV"):
        load_image_folder_with_groups(root, csv)
