"""Pascal VOC mean average precision, as the VOC devkit and PaddleDetection compute it.

Matching, per image and class, detections in descending score order:
  * a detection's candidate is the ground-truth box of its class with the
    highest IoU, whether or not that box is already matched (VOC devkit and
    PaddleDetection's DetectionMAP both do this);
  * IoU > overlap_thresh (strictly greater, as PaddleDetection; the MATLAB
    devkit uses >=, which differs only at exactly 0.5): if the candidate is
    difficult (and `evaluate_difficult` is off) the detection is ignored,
    neither TP nor FP; else it is a TP when the candidate is still unmatched
    and an FP (duplicate) when it is already matched;
  * otherwise (no box of that class, or best IoU too low) it is an FP.

IoU convention: boxes in pixels count both edge pixels, width = x2 - x1 + 1
(VOC devkit, and PaddleDetection with `is_bbox_normalized=False`, the YOLOv3
setting). With `is_bbox_normalized=True` width = x2 - x1.

Per class, all detections over the data set are sorted by score (stable, so
ties keep image order), precision and recall are accumulated, and the AP is
  * `11point` (VOC2007): mean over t in 0, 0.1, ..., 1 of the highest
    precision at recall >= t (0 if recall never reaches t);
  * `integral` (VOC2010+): area under the interpolated PR curve, precision
    made monotone from the right. PaddleDetection's own 'integral' sums the
    raw, uninterpolated precision and can be lower; ours follows the devkit.

mAP is the mean AP over classes with at least one counted (non-difficult)
ground-truth box; a class with ground truth but no detections has AP 0.
"""
import numpy as np

from slim.errors import ConfigError, did_you_mean
from slim.metrics.inputs import as_detection_rows, as_ground_truth


def box_iou(box, boxes, pixel_offset=1.0):
    """IoU of one x1y1x2y2 `box` with each row of `boxes` (K, 4).

    `pixel_offset` 1 counts both edge pixels (VOC pixel boxes), 0 treats
    coordinates as continuous (normalized boxes).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inter_w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + pixel_offset
    inter_h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + pixel_offset
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    area = (box[2] - box[0] + pixel_offset) * (box[3] - box[1] + pixel_offset)
    areas = (boxes[:, 2] - boxes[:, 0] + pixel_offset) * (boxes[:, 3] - boxes[:, 1] + pixel_offset)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def precision_recall(scores, is_true_positive, num_gt):
    """Recall and precision after each detection, detections sorted by descending score.

    Ties keep their given order (stable sort), as the MATLAB devkit does.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(is_true_positive, dtype=bool)[order]
    true_positives = np.cumsum(hits)
    false_positives = np.cumsum(~hits)
    recall = true_positives / float(num_gt)
    precision = true_positives / np.maximum(true_positives + false_positives, 1)
    return recall, precision


def voc_ap_11point(recall, precision):
    """VOC2007 11-point AP: mean over t = 0, 0.1, ..., 1 of max precision at recall >= t."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    total = 0.0
    for step in range(11):
        # step / 10 (not np.arange's accumulated 0.1s) so recall 3/10 reaches t = 0.3 exactly.
        reached = recall >= step / 10.0
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / 11.0


def voc_ap_integral(recall, precision):
    """VOC2010+ AP: area under the PR curve with precision made monotone from the right."""
    recall = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    precision = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


AP_FUNCTIONS = {"11point": voc_ap_11point, "integral": voc_ap_integral}


class VOCMetric:
    """Accumulating Pascal VOC mAP over images (see the module docstring for the protocol).

    Args:
        num_classes: number of object classes; labels are 0 .. num_classes - 1.
        map_type: '11point' (VOC2007) or 'integral' (VOC2010+ area under the PR curve).
        overlap_thresh: a detection matches a ground-truth box when IoU > this.
        evaluate_difficult: count difficult boxes as ordinary ones instead of ignoring them.
        is_bbox_normalized: boxes are in [0, 1] (IoU without the +1 pixel).
    """

    def __init__(self, num_classes, map_type="11point", overlap_thresh=0.5,
                 evaluate_difficult=False, is_bbox_normalized=False):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ConfigError(f"num_classes: {num_classes!r} is not valid; expected a positive integer")
        if map_type not in AP_FUNCTIONS:
            raise ConfigError(f"map_type: unknown '{map_type}'{did_you_mean(map_type, AP_FUNCTIONS)}; "
                              f"valid: {', '.join(AP_FUNCTIONS)}")
        if not 0.0 <= float(overlap_thresh) < 1.0:
            raise ConfigError(f"overlap_thresh: {overlap_thresh!r} is not valid; expected 0 <= value < 1")
        self.num_classes = int(num_classes)
        self.map_type = map_type
        self.overlap_thresh = float(overlap_thresh)
        self.evaluate_difficult = bool(evaluate_difficult)
        self.pixel_offset = 0.0 if is_bbox_normalized else 1.0
        self.reset()

    def reset(self):
        """Forget every image seen so far."""
        self._num_gt = np.zeros(self.num_classes, dtype=np.int64)
        self._scores = [[] for _ in range(self.num_classes)]
        self._hits = [[] for _ in range(self.num_classes)]
        self.num_images = 0

    def update(self, detections, ground_truths):
        """Add a batch of images.

        Args:
            detections: one entry per image, rows [label, score, x1, y1, x2, y2] in pixels.
            ground_truths: one entry per image, (boxes, classes, difficult) or a GroundTruth.
        """
        detections, ground_truths = list(detections), list(ground_truths)
        if len(detections) != len(ground_truths):
            raise ValueError(f"{len(detections)} detection arrays for {len(ground_truths)} images")
        for image_detections, image_truth in zip(detections, ground_truths):
            self._add_image(as_detection_rows(image_detections), as_ground_truth(image_truth))

    def _add_image(self, detections, truth):
        self._check_labels(truth.classes, "ground-truth class")
        self._check_labels(detections[:, 0], "detection label")
        ignored = truth.difficult & (not self.evaluate_difficult)
        np.add.at(self._num_gt, truth.classes[~ignored], 1)
        labels = detections[:, 0].astype(np.int64)
        for label in np.unique(labels):
            class_detections = detections[labels == label]
            class_detections = class_detections[np.argsort(-class_detections[:, 1], kind="stable")]
            scores, hits = self._match_class(class_detections, truth, ignored, label)
            self._scores[label].append(scores)
            self._hits[label].append(hits)
        self.num_images += 1

    def _match_class(self, class_detections, truth, ignored, label):
        """(scores, is_tp) of one class's score-sorted detections in one image; ignored ones left out."""
        gt_indices = np.nonzero(truth.classes == label)[0]
        matched = np.zeros(len(gt_indices), dtype=bool)
        scores, hits = [], []
        for row in class_detections:
            hit = False
            if len(gt_indices):
                overlaps = box_iou(row[2:6], truth.boxes[gt_indices], self.pixel_offset)
                best = int(np.argmax(overlaps))
                if overlaps[best] > self.overlap_thresh:
                    if ignored[gt_indices[best]]:
                        continue  # matched a difficult box: neither TP nor FP
                    hit = not matched[best]
                    matched[best] = True
            scores.append(row[1])
            hits.append(hit)
        return np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)

    def _check_labels(self, labels, what):
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise ConfigError(f"{what} {int(bad[0])} is outside 0..{self.num_classes - 1}; "
                              f"num_classes ({self.num_classes}) does not match the data or model")

    def precision_recall(self, class_id):
        """(recall, precision) arrays of one class over all images so far (empty without detections)."""
        if self._num_gt[class_id] == 0 or not self._scores[class_id]:
            return np.zeros(0), np.zeros(0)
        return precision_recall(np.concatenate(self._scores[class_id]),
                                np.concatenate(self._hits[class_id]), self._num_gt[class_id])

    def accumulate(self):
        """{'mAP': float, 'per_class_ap': [AP or None for classes without counted ground truth]}."""
        ap_function = AP_FUNCTIONS[self.map_type]
        per_class_ap = []
        for class_id in range(self.num_classes):
            if self._num_gt[class_id] == 0:
                per_class_ap.append(None)
                continue
            recall, precision = self.precision_recall(class_id)
            per_class_ap.append(ap_function(recall, precision) if len(recall) else 0.0)
        valid = [ap for ap in per_class_ap if ap is not None]
        # No counted ground truth at all: 0, as PaddleDetection reports, so "best" tracking still works.
        mean_ap = float(np.mean(valid)) if valid else 0.0
        return {"mAP": mean_ap, "per_class_ap": per_class_ap}
