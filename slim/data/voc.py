"""Pascal VOC source in the PaddleDetection layout.

    dataset_dir/
      trainval.txt   one line per image: `image_path xml_path`, relative to dataset_dir
      test.txt
      label_list.txt one class name a line (used when use_default_label is false)
      VOCdevkit/VOC2007/{JPEGImages,Annotations}/...

Objects marked `<difficult>1</difficult>` are kept and flagged (VOC mAP ignores
them); unknown class names, degenerate boxes and out-of-image boxes are
dropped or clipped with one warning each (see `slim.data.records`).
"""
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from slim.config import register
from slim.data import records as records_lib
from slim.data.coco import COCODataSet
from slim.errors import DataError, did_you_mean, shorten

# Box coordinates are stored as float32: larger values (and inf, NaN) are no pixel position.
FLOAT32_MAX = float(np.finfo(np.float32).max)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


@register
class VOCDataSet(records_lib.DataSetOptions):
    """A Pascal-VOC-format dataset: list file of `image_path xml_path` lines + XML annotations.

    An `annotation` ending in `.json` is read as a COCO instances file instead
    (the rule PaddleDetection used), so a plain `dataset:` mapping serves both.

    Args:
        dataset_dir: dataset root; list paths are relative to it (`-d` replaces it in every feed).
        annotation: list file (e.g. trainval.txt, test.txt), relative to dataset_dir.
        image_dir: extra directory between dataset_dir and the image paths of the list ('' for none).
        use_default_label: true for the 20 Pascal VOC classes; false to read label_list.
        label_list: class names file, one a line, relative to dataset_dir (when use_default_label is false).
    """

    def __init__(self, dataset_dir: str = "dataset/voc", annotation: str = "trainval.txt",
                 image_dir: str = "", use_default_label: bool = True,
                 label_list: str = "label_list.txt"):
        self.dataset_dir = dataset_dir
        self.annotation = annotation
        self.image_dir = image_dir
        self.use_default_label = use_default_label
        self.label_list = label_list

    def options(self):
        """The options as a plain dict (for YAML templates and copies)."""
        return {"dataset_dir": self.dataset_dir, "annotation": self.annotation,
                "image_dir": self.image_dir, "use_default_label": self.use_default_label,
                "label_list": self.label_list}

    def label_names(self):
        """Class names in label order."""
        if self.is_coco():
            return self.as_coco().label_names()
        if self.use_default_label:
            return list(VOC_CLASSES)
        return read_label_list(records_lib.require_inside(self.dataset_dir, "label_list", self.label_list))

    def is_coco(self):
        """True when `annotation` is a COCO instances JSON (PaddleDetection's rule)."""
        return self.annotation.lower().endswith(".json")

    def as_coco(self):
        """The COCODataSet reading this dataset's JSON annotation, kept so the JSON is parsed once."""
        options = (self.dataset_dir, self.annotation, self.image_dir)
        cached = getattr(self, "_coco_source", None)
        if cached is None or cached[0] != options:
            cached = (options, COCODataSet(*options))
            self._coco_source = cached
        return cached[1]

    def load_records(self, for_training, report=None):
        """Parse the list file and XMLs into record dicts (see `slim.data.records`).

        `for_training` drops images left without objects; evaluation keeps them.
        Bad samples go to `report` (a records.BadSampleReport) with one warning each: a list
        line that is not UTF-8, not two paths, or names a path outside dataset_dir; a missing
        or malformed XML; a missing, truncated or corrupt image.
        """
        if self.is_coco():
            return self.as_coco().load_records(for_training, report)
        list_path = self.annotation_path()
        report = report if report is not None else records_lib.BadSampleReport(list_path)
        if not os.path.isfile(list_path):
            raise DataError(f"list file not found: {list_path} (annotation '{self.annotation}' "
                            f"under dataset_dir '{self.dataset_dir}'; see dataset/voc/README.md "
                            f"for creating trainval.txt / test.txt)")
        self.image_root()  # image_dir must stay inside dataset_dir
        class_to_label = {name: i for i, name in enumerate(self.label_names())}
        lines = records_lib.read_text_lines(list_path, "list file")
        report.total = sum(1 for _, text, problem in lines if problem or text.strip())
        records = []
        for line_number, text, problem in lines:
            where = f"{list_path}:{line_number}"
            if problem:
                report.skip(where, problem)
                continue
            if not text.strip():
                continue
            paths = self._sample_paths(text, where, report)
            if paths is None:
                continue
            record = parse_voc_xml(paths[1], paths[0], class_to_label, report)
            if record is None:
                continue
            # The line index is stable when other lines are skipped or the list grows at its end.
            record["im_id"] = np.int64(line_number - 1)
            record = records_lib.finish_record(record, for_training, report)
            if record is not None:
                records.append(record)
        return records_lib.require_usable(records, report)

    def _sample_paths(self, line, where, report):
        """(image path, xml path) of a list line, or None after a warning (malformed, or a path
        outside dataset_dir)."""
        parts = line.split()
        if len(parts) != 2:
            report.skip(where, f"expected 'image_path xml_path', got '{records_lib.line_excerpt(line)}'")
            return None
        image_parts, xml_parts = (self.image_dir, parts[0]), (parts[1],)
        for what, path_parts in (("image path", image_parts), ("xml path", xml_parts)):
            if records_lib.resolve_inside(self.dataset_dir, *path_parts) is None:
                report.skip(where, records_lib.outside_message(what, path_parts[-1], self.dataset_dir))
                return None
        return os.path.join(self.dataset_dir, *image_parts), os.path.join(self.dataset_dir, *xml_parts)


def read_label_list(path):
    """Class names from a label_list.txt (one a line, blank lines ignored).

    A line that is not UTF-8 is an error, not a skip: leaving a class out would silently
    renumber every class after it.
    """
    if not os.path.isfile(path):
        raise DataError(f"label list not found: {path} (write one class name a line, or set "
                        f"use_default_label: true for the 20 VOC classes)")
    names = []
    for line_number, text, problem in records_lib.read_text_lines(path, "label list"):
        if problem:
            raise DataError(f"label list {path} line {line_number}: {problem}; save it as UTF-8 "
                            f"(a class cannot be skipped: the classes after it would be renumbered)")
        if text.strip():
            names.append(text.strip())
    if not names:
        raise DataError(f"label list {path} is empty; expected one class name a line")
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        shown = ", ".join(f"'{records_lib.line_excerpt(name)}'" for name in duplicated[:5])
        raise DataError(f"label list {path} repeats class names: {shown}"
                        f"{' ...' if len(duplicated) > 5 else ''}")
    return names


def _known_classes(class_to_label):
    """The class names for an 'unknown class' warning: each cut short, at most 25."""
    if len(class_to_label) > 25:
        return f"{len(class_to_label)} classes"
    return ", ".join(records_lib.line_excerpt(name) for name in class_to_label)


def _int_text(element, tag, default=0):
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return default
    return int(float(child.text.strip()))


def parse_voc_xml(xml_path, image_path, class_to_label, report):
    """One VOC XML -> a raw record (boxes not yet clipped/validated), or None if unusable."""
    if not os.path.isfile(xml_path):
        report.skip(xml_path, "annotation file not found")
        return None
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError, LookupError, ValueError) as error:
        # ValueError / LookupError: an unsupported or unknown encoding in the XML declaration.
        report.skip(xml_path, f"malformed XML ({shorten(str(error), 100)})")
        return None
    size, problem = records_lib.checked_image_size(image_path)
    if size is None:
        report.skip(image_path, problem)
        return None
    height, width = size
    boxes, labels, difficult = [], [], []
    for object_index, obj in enumerate(root.findall("object")):
        name_element = obj.find("name")
        name = (name_element.text or "").strip() if name_element is not None else ""
        if name not in class_to_label:
            hint = did_you_mean(name[:100], class_to_label)
            report.warn_object(xml_path, f"object {object_index}: unknown class name "
                                         f"'{records_lib.line_excerpt(name)}'{hint} "
                                         f"(known: {_known_classes(class_to_label)}); object dropped")
            continue
        box_element = obj.find("bndbox")
        try:
            box = [float(box_element.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            report.warn_object(xml_path, f"object {object_index} ({name}): missing or non-numeric bndbox; "
                                         f"object dropped")
            continue
        if not all(abs(value) <= FLOAT32_MAX for value in box):  # also NaN: compares False
            report.warn_object(xml_path, f"object {object_index} ({name}): bndbox {box} is not a finite "
                                         f"pixel coordinate; object dropped")
            continue
        try:
            is_difficult = _int_text(obj, "difficult")
        except (ValueError, OverflowError):  # not a number, or inf
            is_difficult = 0
        boxes.append(box)
        labels.append(class_to_label[name])
        difficult.append(1 if is_difficult else 0)
    return {
        "im_file": image_path,
        "h": height,
        "w": width,
        "gt_bbox": np.asarray(boxes, np.float32).reshape(-1, 4),
        "gt_class": np.asarray(labels, np.int32),
        "difficult": np.asarray(difficult, np.int32),
        "is_crowd": np.zeros(len(labels), np.int32),
        "annotation_file": xml_path,
    }
