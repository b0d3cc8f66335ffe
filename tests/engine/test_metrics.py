"""Dice, IoU and HD95 on hand-made masks whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_diffseg.engine.metrics import EvaluationReport, dice_iou, evaluate_frames, hausdorff95

H, W = 40, 50
CLASSES = {0: "background", 1: "vessel", 2: "catheter"}


def square(top: int = 10, left: int = 10, size: int = 10) -> np.ndarray:
    """(H, W) bool square mask."""
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_dice_iou_identical_and_disjoint() -> None:
    labels = square().astype(np.uint8)
    assert dice_iou(labels, labels, [1]) == {1: (1.0, 1.0)}
    other = square(left=30).astype(np.uint8)
    assert dice_iou(labels, other, [1]) == {1: (0.0, 0.0)}


def test_dice_iou_partial_overlap() -> None:
    # two 10x10 squares shifted by 5 columns: intersection 50, sizes 100 + 100, union 150
    pred = square().astype(np.uint8)
    target = square(left=15).astype(np.uint8)
    dice, iou = dice_iou(pred, target, [1])[1]
    assert dice == pytest.approx(100 / 200)
    assert iou == pytest.approx(50 / 150)


def test_dice_iou_absent_class_is_nan() -> None:
    labels = square().astype(np.uint8)
    scores = dice_iou(labels, labels, [1, 2])
    assert all(math.isnan(v) for v in scores[2])
    assert scores[1] == (1.0, 1.0)


def test_dice_iou_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_iou(np.zeros((4, 4), int), np.zeros((4, 5), int), [1])


def test_hd95_identical_is_zero() -> None:
    assert hausdorff95(square(), square()) == 0.0


def test_hd95_shifted_square() -> None:
    # every boundary pixel is within 3 px of the other boundary, and the leading and trailing
    # columns (more than 5 % of the boundary) are exactly 3 px away
    assert hausdorff95(square(), square(left=13)) == pytest.approx(3.0)
    assert hausdorff95(square(), square(top=13)) == pytest.approx(3.0)


def test_hd95_spacing_scales() -> None:
    assert hausdorff95(square(), square(left=13), spacing=(2.0, 2.0)) == pytest.approx(6.0)
    # anisotropic: a shift along columns is measured in column spacing
    assert hausdorff95(square(), square(left=13), spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hausdorff95(square(), square(top=13), spacing=(0.25, 1.0)) == pytest.approx(0.75)


def test_hd95_empty_masks() -> None:
    empty = np.zeros((H, W), dtype=bool)
    assert math.isnan(hausdorff95(empty, empty))
    diagonal = math.hypot(H, W)
    assert hausdorff95(square(), empty) == pytest.approx(diagonal)
    assert hausdorff95(empty, square(), spacing=(2.0, 0.5)) == pytest.approx(
        math.hypot(2 * H, 0.5 * W)
    )


def test_hd95_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same shape"):
        hausdorff95(square(), square()[:-1])
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(square(), square(), spacing=(1.0, 0.0))


def stacks() -> tuple[np.ndarray, np.ndarray]:
    """Three frames: perfect vessel; vessel shifted 3 px + catheter missed; nothing at all."""
    preds = np.zeros((3, H, W), dtype=np.uint8)
    targets = np.zeros((3, H, W), dtype=np.uint8)
    preds[0][square()] = 1
    targets[0][square()] = 1
    preds[1][square(left=13)] = 1
    targets[1][square()] = 1
    targets[1][square(top=25, left=35, size=5)] = 2
    return preds, targets


def test_evaluate_frames() -> None:
    preds, targets = stacks()
    report = evaluate_frames(preds, targets, CLASSES)
    assert report.frames == 3
    assert set(report.per_class) == {"vessel", "catheter"}

    vessel = report.per_class["vessel"]
    assert vessel["frames"] == 2  # frame 2 has no vessel anywhere: excluded, not counted as 1
    assert vessel["dice"] == pytest.approx((1.0 + 0.7) / 2)  # 70 of 100 px overlap in frame 1
    assert vessel["iou"] == pytest.approx((1.0 + 70 / 130) / 2)
    assert vessel["hd95"] == pytest.approx((0.0 + 3.0) / 2)

    catheter = report.per_class["catheter"]
    assert catheter["frames"] == 1
    assert catheter["dice"] == 0.0
    assert catheter["iou"] == 0.0
    assert catheter["hd95"] == pytest.approx(math.hypot(H, W))

    assert report.mean["dice"] == pytest.approx((vessel["dice"] + 0.0) / 2)
    assert report.mean["hd95"] == pytest.approx((1.5 + math.hypot(H, W)) / 2)


def test_evaluate_frames_with_background_and_spacing() -> None:
    preds, targets = stacks()
    report = evaluate_frames(preds, targets, CLASSES, spacing=(0.5, 0.5), ignore_background=False)
    assert list(report.per_class) == ["background", "vessel", "catheter"]
    assert report.per_class["background"]["frames"] == 3
    assert report.per_class["vessel"]["hd95"] == pytest.approx(0.75)


def test_class_never_present_is_nan_and_excluded() -> None:
    preds, targets = stacks()
    report = evaluate_frames(preds, targets, {**CLASSES, 3: "stenosis"})
    stenosis = report.per_class["stenosis"]
    assert stenosis["frames"] == 0
    assert all(math.isnan(stenosis[key]) for key in ("dice", "iou", "hd95"))
    without = evaluate_frames(preds, targets, CLASSES)
    assert report.mean == pytest.approx(without.mean)


def test_single_frame_and_shape_errors() -> None:
    labels = square().astype(np.uint8)
    report = evaluate_frames(labels, labels, CLASSES)
    assert report.frames == 1
    assert report.per_class["vessel"]["dice"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        evaluate_frames(labels[None], labels[None, :-1], CLASSES)


def test_report_to_dict_is_json_friendly() -> None:
    preds, targets = stacks()
    report = evaluate_frames(preds, targets, {**CLASSES, 3: "stenosis"})
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN would raise here
    assert json.loads(text) == data
    assert data["frames"] == 3
    assert data["per_class"]["stenosis"] == {"dice": None, "iou": None, "hd95": None, "frames": 0}
    assert data["per_class"]["vessel"]["frames"] == 2
    assert isinstance(data["per_class"]["vessel"]["frames"], int)


def test_format_table() -> None:
    preds, targets = stacks()
    table = evaluate_frames(preds, targets, {**CLASSES, 3: "stenosis"}).format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "dice", "iou", "hd95", "frames"]
    assert any(line.startswith("vessel") and "0.8500" in line for line in lines)
    assert any(
        line.startswith("stenosis") and line.split()[1:] == ["-", "-", "-", "0"] for line in lines
    )
    assert any(line.startswith("mean") for line in lines)
    # columns are aligned: every row of the table body has the same width up to 'frames'
    body = [line for line in lines if line and not line.startswith("(")]
    assert len({len(line) for line in body if not line.startswith("mean")}) == 1
    assert "(3 frames)" in table


def test_empty_report_table() -> None:
    report = EvaluationReport(mean={"dice": math.nan, "iou": math.nan, "hd95": math.nan})
    assert "mean" in report.format_table()
    assert report.to_dict()["mean"] == {"dice": None, "iou": None, "hd95": None}
