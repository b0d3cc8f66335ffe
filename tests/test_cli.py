"""The `napari-diffseg` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_diffseg.cli import main

EXE = str(Path(sys.executable).with_name("napari-diffseg"))


def test_make_sample_writes_a_davis_dataset(tmp_path):
    out = tmp_path / "synth"
    result = subprocess.run(
        [EXE, "make-sample", str(out), "--sequences", "2", "--frames", "11", "--size", "64",
         "--label-every", "5", "--seed", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["seq000", "seq001"]
    for seq in ["seq000", "seq001"]:
        assert len(list((out / "JPEGImages" / seq).glob("*.png"))) == 11
        ann = sorted(p.stem for p in (out / "Annotations" / seq).glob("*.png"))
        assert ann == ["00000", "00005", "00010"]
        lab = np.asarray(Image.open(out / "Annotations" / seq / "00005.png"))
        assert lab.shape == (64, 64) and lab.max() >= 1
    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"0": "background", "1": "vessel", "2": "catheter", "3": "guidewire"}


def test_make_sample_is_deterministic(tmp_path):
    for name in ["a", "b"]:
        assert main(["make-sample", str(tmp_path / name), "--sequences", "1", "--frames", "3",
                     "--size", "64", "--seed", "5"]) == 0
    for rel in ["JPEGImages/seq000/00002.png", "Annotations/seq000/00000.png"]:
        a = np.asarray(Image.open(tmp_path / "a" / rel))
        b = np.asarray(Image.open(tmp_path / "b" / rel))
        np.testing.assert_array_equal(a, b)


def test_info_reports_what_the_reader_sees(tmp_path, capsys):
    main(["make-sample", str(tmp_path / "d"), "--sequences", "1", "--frames", "6", "--size",
          "64"])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "d"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "davis"
    assert info["shape"] == [6, 64, 64]
    assert info["labelled_frames"] == [0, 5]
    assert info["classes"]["1"] == "vessel"


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "empty.dcm"
    bad.write_bytes(b"")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "empty.dcm" in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--frames", "0"], ["--difficulty", "2"]])
def test_make_sample_rejects_bad_options(tmp_path, args):
    with pytest.raises(SystemExit) as exc:
        main(["make-sample", str(tmp_path / "x"), *args])
    assert exc.value.code == 2


def test_demo_without_display_says_how_to_run_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([EXE, "demo"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "xvfb-run" in result.stderr


def test_demo_opens_the_sample_and_saves_a_screenshot(tmp_path):
    """Under the virtual display pytest-xvfb provides, the demo window shows the sample."""
    import os

    from napari_diffseg.demo import SAMPLE_VIDEO

    assert SAMPLE_VIDEO.exists()
    shot = tmp_path / "demo.png"
    home = tmp_path / "home"
    before = sorted(p.name for p in SAMPLE_VIDEO.parent.iterdir())
    env = {**os.environ, "NAPARI_DIFFSEG_HOME": str(home)}
    result = subprocess.run([EXE, "demo", "--screenshot", str(shot)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    picture = np.asarray(Image.open(shot))
    assert picture.shape[0] > 500 and picture.shape[1] > 800
    assert "read DAVIS sequence coronary_demo" in result.stderr
    # the dock opens on the sample and adopts its labelled frames as verified
    assert "dock on coronary_demo: 8 verified frames" in result.stderr
    # the work on the sample goes to the user's folder, never into the package's sample_data/
    assert (home / "coronary_demo.diffseg" / "state.json").is_file()
    assert sorted(p.name for p in SAMPLE_VIDEO.parent.iterdir()) == before
    # napari's PyQt5 toast is replaced by one line in the terminal
    assert "PyQt5 backend is deprecated" not in result.stderr
    assert "deprecated its PyQt5 backend" in result.stderr
