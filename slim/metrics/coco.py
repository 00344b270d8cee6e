"""COCO bbox mAP through pycocotools.

Box convention: detections and ground truth are x1y1x2y2 in pixels; COCO
boxes are [x, y, w, h] with w = x2 - x1 (continuous coordinates, as
pycocotools and PaddleDetection 2.x use; a COCO data source must turn an
annotation's [x, y, w, h] into x2 = x + w for the two to agree).
Labels are our contiguous 0 .. C-1; `label_to_category_id` maps them to COCO
category ids, by default the gt's category ids in ascending order (how
PaddleDetection numbers COCO classes).
"""
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from slim.errors import ConfigError, DataError
from slim.metrics.inputs import as_detection_rows, as_ground_truth

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quietly(function, *args, **kwargs):
    """Run a pycocotools call with its progress prints captured; returns (result, printed text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = function(*args, **kwargs)
    return result, buffer.getvalue()


def load_coco_gt(coco_gt):
    """A pycocotools COCO object from a COCO object or an instances JSON path."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    path = os.fspath(coco_gt)
    if not os.path.isfile(path):
        raise DataError(f"COCO annotation file '{path}' does not exist")
    try:
        coco, _ = _quietly(COCO, path)
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise DataError(f"COCO annotation file '{path}' is not a valid instances JSON: "
                        f"{type(error).__name__}: {error}") from None
    return coco


def coco_gt_from_voc(ground_truths, image_ids=None, label_to_category_id=None,
                     class_names=None, image_sizes=None):
    """Build an in-memory COCO ground truth from VOC-style per-image ground truth.

    Args:
        ground_truths: one (boxes, classes[, difficult]) per image, boxes x1y1x2y2 pixels.
        image_ids: COCO image id of each image (default 1, 2, ...).
        label_to_category_id: list or dict label -> category id (default label + 1).
        class_names: category names by label (default the label as text).
        image_sizes: (height, width) of each image, stored in the `images` entries.

    Difficult boxes become `iscrowd: 1`, COCO's ignore regions: a detection on
    one is neither a TP nor an FP, the closest COCO has to VOC's rule.
    """
    truths = [as_ground_truth(g) for g in ground_truths]
    image_ids = list(range(1, len(truths) + 1)) if image_ids is None else [int(i) for i in image_ids]
    if len(image_ids) != len(truths):
        raise ValueError(f"{len(image_ids)} image ids for {len(truths)} images")
    labels = sorted({int(c) for truth in truths for c in truth.classes})
    if label_to_category_id is None:
        num_labels = len(class_names) if class_names is not None else (labels[-1] + 1 if labels else 0)
        label_to_category_id = [label + 1 for label in range(num_labels)]
    mapping = _label_mapping(label_to_category_id)
    categories = [{"id": category_id,
                   "name": str(class_names[label]) if class_names is not None else str(label)}
                  for label, category_id in sorted(mapping.items())]
    images, annotations = [], []
    for index, (image_id, truth) in enumerate(zip(image_ids, truths)):
        image = {"id": image_id, "file_name": f"{image_id}.jpg"}
        if image_sizes is not None:
            image["height"], image["width"] = (int(v) for v in image_sizes[index])
        images.append(image)
        for box, label, difficult in zip(truth.boxes, truth.classes, truth.difficult):
            if int(label) not in mapping:
                raise ValueError(f"ground-truth class {int(label)} has no category id")
            x, y, w, h = _xyxy_to_xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": mapping[int(label)], "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": int(bool(difficult))})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    _quietly(coco.createIndex)
    return coco


def _label_mapping(label_to_category_id):
    """{label: category id} from a list (index = label) or a dict."""
    if isinstance(label_to_category_id, dict):
        return {int(k): int(v) for k, v in label_to_category_id.items()}
    return {label: int(v) for label, v in enumerate(label_to_category_id)}


def _xyxy_to_xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def detections_to_coco_json(detections, image_ids, label_to_category_id):
    """COCO result records [{image_id, category_id, bbox: [x, y, w, h], score}] of a batch."""
    mapping = _label_mapping(label_to_category_id)
    records = []
    for image_detections, image_id in zip(detections, image_ids):
        for label, score, *box in as_detection_rows(image_detections).tolist():
            category_id = mapping.get(int(label))
            if category_id is None:
                raise ConfigError(f"detection label {int(label)} has no COCO category: the annotation "
                                  f"has {len(mapping)} categories; check num_classes")
            records.append({"image_id": int(image_id), "category_id": category_id,
                            "bbox": _xyxy_to_xywh(box), "score": float(score)})
    return records


class COCOMetric:
    """Accumulating COCO bbox mAP (pycocotools COCOeval) over images.

    Args:
        coco_gt: a pycocotools COCO object or the path of an instances JSON.
        label_to_category_id: list or dict label -> COCO category id
            (default: the gt's category ids in ascending order).
        json_path: where to write the detection results JSON (xywh), if anywhere.
        verbose: print pycocotools' 12-line summary on accumulate.
    """

    def __init__(self, coco_gt, label_to_category_id=None, json_path=None, verbose=False):
        self.coco_gt = load_coco_gt(coco_gt)
        category_ids = sorted(self.coco_gt.getCatIds())
        if label_to_category_id is None:
            label_to_category_id = category_ids
        self.label_to_category_id = _label_mapping(label_to_category_id)
        unknown = sorted(set(self.label_to_category_id.values()) - set(category_ids))
        if unknown:
            raise ConfigError(f"label_to_category_id names category ids {unknown} that the COCO "
                              f"annotation does not have; it has {category_ids}")
        self.json_path = json_path
        self.verbose = verbose
        self.summary = ""
        self.reset()

    def reset(self):
        """Forget every image seen so far."""
        self._records = []
        self._image_ids = set()

    def update(self, detections, image_ids):
        """Add a batch: detections per image (rows [label, score, x1, y1, x2, y2]) and their image ids."""
        detections, image_ids = list(detections), [int(i) for i in np.asarray(image_ids).reshape(-1)]
        if len(detections) != len(image_ids):
            raise ValueError(f"{len(detections)} detection arrays for {len(image_ids)} image ids")
        missing = [i for i in image_ids if i not in self.coco_gt.imgs]
        if missing:
            raise DataError(f"image id {missing[0]} is not in the COCO annotation")
        self._records.extend(detections_to_coco_json(detections, image_ids, self.label_to_category_id))
        self._image_ids.update(image_ids)

    def accumulate(self):
        """{'mAP': AP, the 12 COCO stats by name (AP, AP50, ..., ARl), 'per_class_ap': [...]}.

        Only the images passed to `update` are scored. `per_class_ap` is
        AP@[.5:.95] per label, None for a label without ground truth there.
        """
        if self.json_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.json_path)), exist_ok=True)
            with open(self.json_path, "w") as file:
                json.dump(self._records, file)
        num_labels = max(self.label_to_category_id) + 1 if self.label_to_category_id else 0
        if not self._records:
            # pycocotools cannot load an empty result list; with nothing detected every stat is 0.
            stats = [0.0] * len(COCO_STAT_NAMES)
            per_class_ap = [0.0 if self._has_gt(label) else None for label in range(num_labels)]
            self.summary = "no detections: every COCO stat is 0"
            return self._result(stats, per_class_ap)
        coco_dt, _ = _quietly(self.coco_gt.loadRes, self._records)
        evaluator = COCOeval(self.coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = sorted(self._image_ids)
        _quietly(evaluator.evaluate)
        _quietly(evaluator.accumulate)
        _, self.summary = _quietly(evaluator.summarize)
        if self.verbose:
            print(self.summary, end="")
        per_class_ap = [self._class_ap(evaluator, label) for label in range(num_labels)]
        return self._result([float(v) for v in evaluator.stats], per_class_ap)

    def _has_gt(self, label):
        category_id = self.label_to_category_id.get(label)
        return bool(self.coco_gt.getAnnIds(imgIds=sorted(self._image_ids), catIds=[category_id],
                                           iscrowd=False)) if category_id is not None else False

    def _class_ap(self, evaluator, label):
        """AP@[.5:.95] (area all, maxDets 100) of one label; None when it has no ground truth."""
        category_id = self.label_to_category_id.get(label)
        if category_id not in evaluator.params.catIds:
            return None
        precision = evaluator.eval["precision"][:, :, evaluator.params.catIds.index(category_id), 0, -1]
        valid = precision[precision > -1]
        return float(valid.mean()) if valid.size else None

    @staticmethod
    def _result(stats, per_class_ap):
        result = {"mAP": float(stats[0])}
        result.update(zip(COCO_STAT_NAMES, (float(v) for v in stats)))
        result["per_class_ap"] = per_class_ap
        return result
