"""atomic_write: the old file or the whole new one, synced to disk; an error names the file."""

import errno
import os

import pytest

from squeeze_span.fileio import atomic_write


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    sync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor):
        events.append(("fsync", os.fstat(descriptor).st_ino))
        sync(descriptor)

    def recorded_replace(source, destination):
        events.append(("replace", os.stat(source).st_ino))
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    with atomic_write(tmp_path / "file.txt") as temp:
        temp.write_text("new")
        written = temp.stat().st_ino
    assert events == [("fsync", written), ("replace", written), ("fsync", tmp_path.stat().st_ino)]
    assert (tmp_path / "file.txt").read_text() == "new"


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(OSError) as error:
        with atomic_write(target) as temp:
            temp.write_text("half of it")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk does
    assert error.value.errno == errno.ENOSPC and str(error.value).endswith(f": '{target}'")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
