"""The two inputs every detection metric takes: detections and ground truth of one image.

Detections of an image are the rows of our eval program's NMS output,
`[label, score, x1, y1, x2, y2]` with boxes in original-image pixels. Paddle's
multiclass NMS marks "nothing detected" with a single row whose label is -1;
such rows are dropped here so metrics never see them.

Ground truth of an image is boxes (N, 4; x1, y1, x2, y2 pixels), classes (N,)
and difficult flags (N,). It may be given as a `GroundTruth`, a 2- or
3-sequence `(boxes, classes[, difficult])`, or a PaddleDetection-style sample
mapping with keys `gt_bbox`, `gt_class` and (optionally) `difficult` or
`is_difficult`.
"""
from typing import NamedTuple

import numpy as np

DETECTION_COLUMNS = ("label", "score", "x1", "y1", "x2", "y2")


class GroundTruth(NamedTuple):
    """Ground truth of one image: boxes (N, 4) x1y1x2y2, classes (N,) int, difficult (N,) bool."""
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray


def as_ground_truth(value):
    """Normalize one image's ground truth (see module docstring) into a `GroundTruth`."""
    if isinstance(value, GroundTruth):
        boxes, classes, difficult = value
    elif isinstance(value, dict):
        boxes, classes = value["gt_bbox"], value["gt_class"]
        difficult = value.get("difficult", value.get("is_difficult"))
    else:
        parts = tuple(value)
        if len(parts) not in (2, 3):
            raise ValueError(f"ground truth must be (boxes, classes[, difficult]), got {len(parts)} parts")
        boxes, classes = parts[0], parts[1]
        difficult = parts[2] if len(parts) == 3 else None
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    # Loaders often keep classes / difficult as (N, 1) columns.
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if difficult is None:
        difficult = np.zeros(len(classes), dtype=bool)
    difficult = np.asarray(difficult).reshape(-1).astype(bool)
    if not len(boxes) == len(classes) == len(difficult):
        raise ValueError(f"ground truth lengths differ: {len(boxes)} boxes, {len(classes)} classes, "
                         f"{len(difficult)} difficult flags")
    return GroundTruth(boxes, classes, difficult)


def as_detection_rows(detections):
    """One image's detections as a float64 (M, 6) array; NMS's label -1 'no detection' rows dropped."""
    rows = np.asarray(detections if detections is not None else [], dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 6))
    if rows.ndim == 2 and rows.shape[1] == 1 and np.all(rows[:, 0] < 0):
        return np.zeros((0, 6))  # the (1, 1) [[-1]] tensor older multiclass_nms returns when empty
    if rows.ndim == 1 and rows.size == 6:
        rows = rows.reshape(1, 6)
    if rows.ndim != 2 or rows.shape[1] != 6:
        raise ValueError(f"detections must have rows of {list(DETECTION_COLUMNS)}, got shape {rows.shape}")
    return rows[rows[:, 0] >= 0]
