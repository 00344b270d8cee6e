"""COCO-format source: an instances JSON read with pycocotools.

Category ids (sparse in COCO: 1..90) map to contiguous labels 0..K-1 in id
order. Crowd regions (`iscrowd: 1`) are left out of training records and kept,
flagged, in evaluation records (COCO evaluation ignores detections on them).
"""
import contextlib
import io
import json
import os

import numpy as np

from slim.config import register
from slim.data import records as records_lib
from slim.errors import DataError, shorten


@register
class COCODataSet(records_lib.DataSetOptions):
    """A COCO-format dataset: an instances JSON plus an image directory.

    Args:
        dataset_dir: dataset root (`-d` replaces it in every feed).
        annotation: instances JSON, relative to dataset_dir.
        image_dir: directory of the images named in the JSON, relative to dataset_dir.
    """

    def __init__(self, dataset_dir: str = "dataset/coco",
                 annotation: str = "annotations/instances_train2017.json",
                 image_dir: str = "train2017"):
        self.dataset_dir = dataset_dir
        self.annotation = annotation
        self.image_dir = image_dir
        # Parsed annotation files by path: COCO train2017's JSON takes seconds to read,
        # and label_names / category_ids / load_records each need it.
        self._parsed = {}

    def options(self):
        """The options as a plain dict (for YAML templates and copies)."""
        return {"dataset_dir": self.dataset_dir, "annotation": self.annotation,
                "image_dir": self.image_dir}

    def _coco(self):
        path = os.path.abspath(self.annotation_path())
        if path not in self._parsed:
            self._parsed[path] = self._parse(path)
        return self._parsed[path]

    def _parse(self, path):
        if not os.path.isfile(path):
            raise DataError(f"annotation file not found: {path} (annotation '{self.annotation}' "
                            f"under dataset_dir '{self.dataset_dir}')")
        try:
            with open(path, encoding="utf-8") as json_file:
                content = json.load(json_file)
        except (ValueError, UnicodeDecodeError) as error:  # JSON syntax, bad UTF-8, huge numbers
            raise DataError(f"malformed JSON in {path}: {shorten(str(error), 120)}") from None
        except RecursionError:
            raise DataError(f"malformed JSON in {path}: nested too deeply") from None
        check_instances(content, path)
        from pycocotools.coco import COCO
        coco = COCO()
        coco.dataset = content
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco

    def label_names(self):
        """Category names in label order (category id order)."""
        coco = self._coco()
        return [coco.cats[cat_id]["name"] for cat_id in sorted(coco.cats)]

    def category_ids(self):
        """COCO category id of each label (for writing COCO-format detections)."""
        return sorted(self._coco().cats)

    def load_records(self, for_training, report=None):
        """Records of every usable image (see `slim.data.records`); bad samples go to `report`."""
        path = self.annotation_path()
        report = report if report is not None else records_lib.BadSampleReport(path)
        coco = self._coco()
        image_root = self.image_root()
        label_of_category = {cat_id: label for label, cat_id in enumerate(sorted(coco.cats))}
        image_ids = sorted(coco.imgs)
        report.total = len(image_ids)
        records = []
        for image_id in image_ids:
            info = coco.imgs[image_id]
            where = f"{path} image {image_id}"
            file_name = info.get("file_name")
            if not file_name or not isinstance(file_name, str):
                report.skip(where, f"file_name {shorten(file_name, 60)!r} is not a file name")
                continue
            if records_lib.resolve_inside(self.dataset_dir, self.image_dir, file_name) is None:
                report.skip(where, records_lib.outside_message("file_name", file_name, self.dataset_dir))
                continue
            image_path = os.path.join(image_root, file_name)
            size, problem = records_lib.checked_image_size(image_path)
            if size is None:
                report.skip(image_path, problem)
                continue
            record = self._record(coco, image_id, image_path, size, label_of_category, where, report)
            record = records_lib.finish_record(record, for_training, report)
            if record is not None:
                records.append(record)
        return records_lib.require_usable(records, report)

    @staticmethod
    def _record(coco, image_id, image_path, size, label_of_category, where, report):
        boxes, labels, crowd = [], [], []
        for annotation in coco.imgToAnns.get(image_id, []):
            annotation_id = annotation.get("id", "?")
            bbox = annotation.get("bbox")
            category = annotation.get("category_id")
            if category not in label_of_category:
                report.warn_object(where, f"annotation {shorten(annotation_id, 60)}: unknown "
                                          f"category_id {shorten(category, 60)} (known: "
                                          f"{shorten(sorted(label_of_category))}); dropped")
                continue
            try:
                x, y, box_w, box_h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                report.warn_object(where, f"annotation {shorten(annotation_id, 60)}: bbox "
                                          f"{shorten(bbox, 60)} is not [x, y, w, h]; dropped")
                continue
            boxes.append([x, y, x + box_w, y + box_h])
            labels.append(label_of_category[category])
            crowd.append(1 if annotation.get("iscrowd", 0) else 0)
        return {
            "im_file": image_path,
            "im_id": np.int64(image_id),
            "h": size[0],
            "w": size[1],
            "gt_bbox": np.asarray(boxes, np.float32).reshape(-1, 4),
            "gt_class": np.asarray(labels, np.int32),
            "difficult": np.zeros(len(labels), np.int32),
            "is_crowd": np.asarray(crowd, np.int32),
            "annotation_file": where,
        }


def _is_id(value, kinds=(int,)):
    return isinstance(value, kinds) and not isinstance(value, bool)


# What each entry of an instances file must hold for indexing: key -> accepted id types.
_ENTRY_KEYS = {
    "images": {"id": (int,)},
    "categories": {"id": (int,), "name": (str,)},
    "annotations": {"id": (int, str), "image_id": (int, str), "category_id": (int, str)},
}


def check_instances(content, path):
    """DataError (one line naming the file and the entry) unless `content` is a COCO instances
    object whose images, categories and annotations can be indexed: objects with int ids (ints
    or strings for an annotation's references), unique category ids, named categories."""
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) \
            or not isinstance(content.get("categories"), list) \
            or not isinstance(content.setdefault("annotations", []), list):
        raise DataError(f"{path} is not a COCO instances file: expected an object with "
                        f"'images', 'annotations' and 'categories' lists")
    for section, keys in _ENTRY_KEYS.items():
        for index, entry in enumerate(content[section]):
            bad = not isinstance(entry, dict) or any(not _is_id(entry.get(key), kinds)
                                                     for key, kinds in keys.items())
            if bad:
                wanted = ", ".join(f"{key} ({'/'.join(k.__name__ for k in kinds)})"
                                   for key, kinds in keys.items())
                raise DataError(f"{path}: {section}[{index}] must be an object with {wanted}; "
                                f"got {shorten(entry, 60)}")
    category_ids = [category["id"] for category in content["categories"]]
    if len(set(category_ids)) != len(category_ids):
        repeated = sorted({i for i in category_ids if category_ids.count(i) > 1})
        raise DataError(f"{path}: categories repeat the id {repeated[0]} (each label needs its own id)")
