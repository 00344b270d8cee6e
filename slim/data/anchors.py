"""YOLOv3 anchors fitted to a dataset: k-means on IoU distance over its boxes at the train size.

A box (and an anchor) is its (width, height) in pixels of the network input: YOLOv3's
resize stretches each image to `size` x `size`, so a box of w x h pixels in an image of
W x H becomes w * size / W by h * size / H. The distance of a box to an anchor is
1 - IoU of the two placed at the same centre (YOLOv2's recipe); each cluster's centre is
the median of its boxes. The best of `restarts` runs (k-means++ seeding on the same
distance) by mean best IoU, the mean over boxes of the IoU with their closest anchor, is
kept. Anchors come out rounded to whole pixels and sorted by area, the order the
detection configs list them in (the smallest three on the finest feature map).

Imports: numpy, slim.data.voc / coco sources (records), errors.
"""
import numpy as np

from slim.config.yaml_io import flow_value
from slim.errors import DataError, UserError

DEFAULT_ANCHORS = 9
DEFAULT_RESTARTS = 20
MAX_ITERATIONS = 300


def box_sizes(records, size):
    """(N, 2) float64 widths and heights, at a `size` x `size` input, of every box of
    `records` (detection records: gt_bbox x1, y1, x2, y2 in pixels, w, h of the image),
    boxes of no area left out."""
    sizes = []
    for record in records:
        width, height = float(record["w"]), float(record["h"])
        boxes = np.asarray(record["gt_bbox"], np.float64).reshape(-1, 4)
        scaled = np.stack([(boxes[:, 2] - boxes[:, 0]) * size / width,
                           (boxes[:, 3] - boxes[:, 1]) * size / height], axis=1)
        sizes.append(scaled[(scaled > 0).all(axis=1)])
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def iou_wh(boxes, anchors):
    """(N, K) IoU of every (w, h) of `boxes` with every (w, h) of `anchors`, centred alike."""
    boxes, anchors = np.asarray(boxes, np.float64), np.asarray(anchors, np.float64)
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0])
             * np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def mean_best_iou(boxes, anchors):
    """Mean over `boxes` of the IoU with their best anchor."""
    return float(iou_wh(boxes, anchors).max(axis=1).mean())


def _seed_centres(boxes, k, rng):
    """k-means++ on the IoU distance: each next centre a box drawn with probability
    proportional to its distance (1 - IoU) from the nearest centre so far."""
    centres = [boxes[rng.integers(len(boxes))]]
    for _ in range(1, k):
        distance = 1.0 - iou_wh(boxes, np.array(centres)).max(axis=1)
        total = distance.sum()
        index = rng.integers(len(boxes)) if total <= 0 else rng.choice(len(boxes), p=distance / total)
        centres.append(boxes[index])
    return np.array(centres, np.float64)


def _kmeans_once(boxes, k, rng):
    centres = _seed_centres(boxes, k, rng)
    assignment = None
    for _ in range(MAX_ITERATIONS):
        nearest = iou_wh(boxes, centres).argmax(axis=1)
        if assignment is not None and np.array_equal(nearest, assignment):
            break
        assignment = nearest
        for cluster in range(k):
            members = boxes[assignment == cluster]
            if len(members):
                centres[cluster] = np.median(members, axis=0)
    return centres


def fit_anchors(boxes, k=DEFAULT_ANCHORS, restarts=DEFAULT_RESTARTS, seed=0):
    """(anchors [[w, h], ...] as ints sorted by area, their mean best IoU over `boxes`):
    the best of `restarts` k-means runs on IoU distance (see the module docstring)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 2)
    if k < 1 or restarts < 1:
        raise UserError(f"anchors: k ({k}) and restarts ({restarts}) must be >= 1")
    if len(np.unique(boxes, axis=0)) < k:
        raise DataError(f"{len(boxes)} boxes ({len(np.unique(boxes, axis=0))} distinct sizes) "
                        f"cannot give {k} anchors; use fewer anchors or more data")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(restarts):
        centres = np.maximum(np.round(_kmeans_once(boxes, k, rng)), 1)
        score = mean_best_iou(boxes, centres)
        if score > best_iou:
            best, best_iou = centres, score
    order = np.argsort(best[:, 0] * best[:, 1], kind="stable")
    anchors = [[int(w), int(h)] for w, h in best[order]]
    return anchors, best_iou


def anchor_masks(count, outputs=3):
    """YOLOv3's anchor_masks for `count` anchors sorted by area over `outputs` feature maps
    (the coarsest map takes the largest): [[6, 7, 8], [3, 4, 5], [0, 1, 2]] for 9."""
    if count % outputs:
        raise UserError(f"{count} anchors do not split over YOLOv3's {outputs} outputs; use a "
                        f"multiple of {outputs}")
    per = count // outputs
    return [list(range(start, start + per)) for start in range(count - per, -1, -per)]


def anchors_override(anchors):
    """The `-o` item that sets `anchors` (and their masks) in a detection config."""
    return (f"YOLOv3Head.anchors={flow_value(anchors)} "
            f"YOLOv3Head.anchor_masks={flow_value(anchor_masks(len(anchors)))}")


def anchors_yaml(anchors, note=""):
    """A YOLOv3Head section with `anchors` and their masks, as YAML text."""
    lines = [f"# {note}"] if note else []
    lines += ["YOLOv3Head:", f"  anchor_masks: {flow_value(anchor_masks(len(anchors)))}",
              f"  anchors: {flow_value(anchors)}", ""]
    return "\n".join(lines)


