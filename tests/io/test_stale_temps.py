"""Temporary files that killed saves leave are removed when their folder is opened: only ours
(``.<name>.<pid>-<hex8>.tmp``, or 0.1's ``.<name>.<hex8>.tmp``), only stale (untouched for a
minute and their writer's process gone)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_diffseg.io import atomic_path, remove_stale_temps
from napari_diffseg.io.project import ProjectState, load_project, save_project


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftover(folder, name, *, age_s=600.0):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a file")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.fixture
def leftovers(tmp_path):
    """(folder, files that must go, files that must stay) in tmp_path/p."""
    folder = tmp_path / "p"
    dead = _dead_pid()
    stale = [
        _leftover(folder, f".labels.npz.{dead}-0badf00d.tmp"),  # killed writer
        _leftover(folder, ".state.json.1a2b3c4d.tmp"),  # 0.1 naming, no pid
        _leftover(folder, f"Annotations/v/.00003.png.{dead}-12345678.tmp"),
    ]
    kept = [
        _leftover(folder, f".state.json.{dead}-abcdef01.tmp", age_s=5),  # too recent
        _leftover(folder, f".labels.npz.{os.getpid()}-abcdef02.tmp"),  # a live writer (us)
        _leftover(folder, ".notes.tmp"),  # not our naming
        _leftover(folder, "draft.tmp"),
        _leftover(folder, f"labels.npz.{dead}-abcdef03.tmp"),  # not hidden: not ours
    ]
    return folder, stale, kept


def test_remove_stale_temps_takes_only_ours_and_only_stale(leftovers):
    folder, stale, kept = leftovers

    removed = remove_stale_temps(folder, recursive=True)

    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_opening_a_project_cleans_its_leftovers(leftovers):
    folder, stale, kept = leftovers
    state = ProjectState(video="v.mp4", sequence="v", shape=(4, 8, 10),
                         classes={0: "background", 1: "vessel"}, verified=[3])
    save_project(folder, state, np.zeros((4, 8, 10), np.uint8))

    load_project(folder)

    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_a_temp_in_use_is_named_with_its_writers_pid(tmp_path):
    with atomic_path(tmp_path / "x.json") as temp:
        assert temp.name.startswith(f".x.json.{os.getpid()}-")
        temp.write_text("{}")
        os.utime(temp, (0, 0))  # even old, a live writer's file stays
        assert remove_stale_temps(tmp_path) == []
    assert (tmp_path / "x.json").read_text() == "{}"


def test_unreadable_folder_is_no_error(tmp_path):
    assert remove_stale_temps(tmp_path / "missing", recursive=True) == []
