"""Output folders are proven writable before any work, and the proof leaves nothing behind."""

from __future__ import annotations

import pytest

from synaug.errors import SynaugError
from synaug.outputs import check_writable_folder


def test_a_new_folder_is_tested_and_removed_again(tmp_path):
    assert check_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_keeps_its_files_and_gets_no_new_ones(tmp_path):
    (tmp_path / "kept.txt").write_text("x")
    check_writable_folder(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


@pytest.mark.parametrize("where, reason", [("file/run", "is a file, not a folder"), ("/proc/synaug-run", "No such file")])
def test_a_folder_that_cannot_be_written_is_one_line_naming_the_option(tmp_path, where, reason):
    (tmp_path / "file").write_text("x")
    folder = tmp_path / where  # an absolute `where` replaces tmp_path
    with pytest.raises(SynaugError) as error:
        check_writable_folder(folder, "--out")
    message = str(error.value)
    assert message.startswith(f"cannot write to {folder} (") and reason in message and message.endswith("choose a writable folder with --out.")
    assert "\n" not in message and not folder.exists()
