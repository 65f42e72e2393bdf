"""Image folders, split lists and safe class folder names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_writers import write_image

from synaug.data.folders import (
    check_folder_name,
    class_folder_names,
    load_image_folder,
    load_split_list,
    sanitize_folder_name,
)
from synaug.errors import SynaugError


def make_tree(root: Path) -> Path:
    write_image(root / "cat" / "a.png", color=(255, 0, 0))
    write_image(root / "cat" / "nested" / "b.JPG", color=(250, 5, 0))
    write_image(root / "dog" / "c.jpeg", color=(0, 0, 255))
    write_image(root / "dog" / "d.bmp")
    write_image(root / "dog" / "e.webp")
    (root / "dog" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / ".hidden.png")
    return root


def test_image_folder_classes_are_sorted_subfolders(tmp_path):
    data = load_image_folder(make_tree(tmp_path / "tree"))
    assert data.class_names == ["cat", "dog"]
    assert data.class_counts().tolist() == [2, 3]
    assert not data.in_memory
    image = data.load(0)
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    assert image[0].float().mean() > 250 and image[2].float().mean() < 5


def test_image_folder_resizes_and_converts(tmp_path):
    data = load_image_folder(make_tree(tmp_path / "tree"), size=4, channels=1).materialize()
    assert data.images.shape == (5, 1, 4, 4)


def test_image_folder_with_class_names_reads_sanitised_folders(tmp_path):
    write_image(tmp_path / "tree" / "T-shirt_top" / "0.png")
    write_image(tmp_path / "tree" / "Trouser" / "0.png")
    write_image(tmp_path / "tree" / "Trouser" / "1.png")
    data = load_image_folder(tmp_path / "tree", class_names=["Trouser", "T-shirt/top"])
    assert data.class_names == ["Trouser", "T-shirt/top"]
    assert data.class_counts().tolist() == [2, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(SynaugError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    with pytest.raises(SynaugError, match="no class subfolders"):
        load_image_folder(tmp_path / "flat")
    tree = make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "empty").mkdir()
    with pytest.raises(SynaugError, match="class 'empty' has no images"):
        load_image_folder(tree)
    with pytest.raises(SynaugError, match="matches no class name"):
        load_image_folder(tree, class_names=["cat", "dog"])
    with pytest.raises(SynaugError, match="class 'bird' has no images"):
        load_image_folder(tree, class_names=["bird", "cat", "dog", "empty"])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_file_fails_on_load(tmp_path, damage):
    path = write_image(tmp_path / "tree" / "cat" / "bad.png", size=(64, 64))
    write_image(tmp_path / "tree" / "cat" / "good.png")
    path.write_bytes(b"not a png" if damage == "garbage" else path.read_bytes()[:60])
    data = load_image_folder(tmp_path / "tree")
    assert data.load(1).shape[0] == 3
    with pytest.raises(SynaugError) as error:
        data.materialize()
    assert "bad.png" in str(error.value) and "corrupt or truncated" in str(error.value)


def write_list(tmp_path: Path, lines: list[str]) -> Path:
    write_image(tmp_path / "images" / "train" / "n01" / "x1.jpg")
    write_image(tmp_path / "images" / "train" / "n01" / "x2.jpg")
    write_image(tmp_path / "images" / "train" / "n02" / "with space.jpg")
    list_file = tmp_path / "ImageNet_LT_train.txt"
    list_file.write_text("\n".join(lines) + "\n")
    return list_file


GOOD_LINES = ["train/n01/x1.jpg 0", "train/n02/with space.jpg 1", "", "train/n01/x2.jpg 0"]


def test_split_list_in_imagenet_lt_format(tmp_path):
    data = load_split_list(write_list(tmp_path, GOOD_LINES), tmp_path / "images", size=(5, 7))
    assert data.class_names == ["0", "1"]
    assert data.labels.tolist() == [0, 1, 0]
    assert data.files[1].name == "with space.jpg"
    assert data.load(2).shape == (3, 5, 7)
    named = load_split_list(write_list(tmp_path, GOOD_LINES), tmp_path / "images", class_names=["tench", "goldfish"])
    assert named.class_names == ["tench", "goldfish"]


@pytest.mark.parametrize(
    "lines, class_names, message",
    [
        (GOOD_LINES + ["train/n03/missing.jpg 1"], None, "line 5 of .* names train/n03/missing.jpg"),
        (GOOD_LINES + ["train/n01/x1.jpg 2"], ["a", "b"], "line 5 .* label 2, out of range"),
        (GOOD_LINES + ["train/n01/x1.jpg -1"], None, "label -1, out of range"),
        (["train/n01/x1.jpg 0", "train/n01/x2.jpg 2", "train/n02/with space.jpg 1"], ["a", "b", "c", "d"], "class 3 \\('d'\\) has no images"),
        (["train/n01/x1.jpg 0", "train/n01/x2.jpg 2"], None, "class 1 \\('1'\\) has no images"),
        (["train/n01/x1.jpg zero"], None, "line 1 .* is not `relative/path.jpg label`"),
        ([""], None, "lists no images"),
    ],
)
def test_split_list_errors_name_the_line(tmp_path, lines, class_names, message):
    with pytest.raises(SynaugError, match=message):
        load_split_list(write_list(tmp_path, lines), tmp_path / "images", class_names=class_names)


def test_split_list_missing_files(tmp_path):
    with pytest.raises(SynaugError, match="split list .* does not exist"):
        load_split_list(tmp_path / "absent.txt", tmp_path)
    with pytest.raises(SynaugError, match="image root"):
        load_split_list(write_list(tmp_path, GOOD_LINES), tmp_path / "absent")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("T-shirt/top", "T-shirt_top"),
        ("Ankle boot", "Ankle boot"),
        ("../x", "_x"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("", "_"),
        (".", "_"),
        ("..", "_"),
        ("/etc/passwd", "_etc_passwd"),
        ("what?*", "what__"),
        ("trailing. ", "trailing"),
    ],
)
def test_sanitize_folder_name_never_escapes(tmp_path, name, expected):
    folder = sanitize_folder_name(name)
    assert folder == expected
    target = (tmp_path / folder).resolve()
    assert target.parent == tmp_path.resolve() and target != tmp_path.resolve()


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", "/abs"])
def test_check_folder_name_rejects_names_that_escape(name):
    with pytest.raises(SynaugError) as error:
        check_folder_name(name)
    assert "cannot be used as a folder name" in str(error.value) and "\n" not in str(error.value)


def test_check_folder_name_accepts_plain_names():
    assert check_folder_name("T-shirt_top") == "T-shirt_top"


def test_class_folder_names_must_be_distinct():
    assert class_folder_names(["T-shirt/top", "Bag"]) == ["T-shirt_top", "Bag"]
    with pytest.raises(SynaugError, match="both map to the folder 'a_b'"):
        class_folder_names(["a/b", "a_b"])


def test_long_names_are_cut_to_a_valid_length():
    assert len(sanitize_folder_name("é" * 300).encode()) <= 255
