"""Objects found on drawn images: how many ground-truth objects got a box of their class.

What a person checks on a picture of detections: an object counts as found when a drawn
box (score at or above the drawing threshold) has its class and overlaps it by IoU >= 0.5
(continuous pixel boxes); each box finds at most one object, boxes taken by score. Unlike
mAP this depends on the threshold, and difficult objects count like any other.
"""
import numpy as np

from slim.metrics.voc import box_iou

MATCH_IOU = 0.5


def found_objects(detections, gt_boxes, gt_classes, threshold, iou=MATCH_IOU):
    """[True/False per ground-truth object] of one image: `detections` rows of (label,
    score, x1, y1, x2, y2); only rows scoring >= `threshold` count."""
    rows = np.asarray(detections, np.float64).reshape(-1, 6)
    rows = rows[rows[:, 1] >= threshold]
    rows = rows[np.argsort(-rows[:, 1], kind="stable")]
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    found = np.zeros(len(gt_boxes), bool)
    for row in rows:
        candidates = (np.asarray(gt_classes) == int(row[0])) & ~found
        if not candidates.any():
            continue
        overlaps = np.where(candidates, box_iou(row[2:], gt_boxes, pixel_offset=0), 0.0)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou:
            found[best] = True
    return found.tolist()


def count_found(per_image):
    """(found, total) over images of `found_objects` lists."""
    flags = [flag for image in per_image for flag in image]
    return sum(flags), len(flags)
