"""Sample records and the bad-data policy shared by the VOC and COCO sources.

A record is a plain dict:

    im_file    str, path of the image
    im_id      int64 (VOC: line index in the list file; COCO: the image id)
    h, w       int, image height and width in pixels
    gt_bbox    (N, 4) float32, x1, y1, x2, y2 in pixels
    gt_class   (N,) int32, contiguous labels 0..num_classes-1
    difficult  (N,) int32, 1 for VOC `difficult` objects
    is_crowd   (N,) int32, 1 for COCO crowd regions (evaluation records only)

Bad data policy: a sample that cannot be used (missing/corrupt image,
malformed annotation, no objects left in a training set) is skipped with one
warning line; a bad object (unknown class, degenerate or out-of-image box) is
dropped with one warning line; a box partly outside the image is clipped (a
warning when it sticks out by more than a pixel). A summary line follows.
Only a missing dataset dir / annotation file, or nothing usable at all, is an
error (DataError, exit 2).
"""
import logging
import os
import struct

import numpy as np

from slim.errors import DataError

LOGGER = logging.getLogger("slim.data")

# Boxes sticking out of the image by at most this many pixels are clipped
# silently: VOC boxes reach the last pixel (1-based) and COCO floats overshoot.
CLIP_TOLERANCE_PIXELS = 1.0


class DataSetOptions:
    """Shared plumbing of the dataset config classes: repr, equality and the annotation path.

    Subclasses define `options()` (their options as a dict) and set `dataset_dir`
    and `annotation`.
    """

    def options(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.options()})"

    def __eq__(self, other):
        return type(other) is type(self) and other.options() == self.options()

    def annotation_path(self):
        """The annotation (list or JSON) file under dataset_dir."""
        return os.path.join(self.dataset_dir, self.annotation)


class BadSampleReport:
    """Counts and logs skipped samples, dropped objects and clipped boxes of one source."""

    def __init__(self, source):
        self.source = source
        self.skipped_samples = 0
        self.dropped_objects = 0
        self.clipped_boxes = 0
        self.total = 0

    def skip(self, where, why):
        """A whole sample is unusable: one warning line, counted."""
        self.skipped_samples += 1
        LOGGER.warning("skipped sample %s: %s", where, why)

    def warn_object(self, where, why):
        """One object of a sample is dropped: one warning line, counted."""
        self.dropped_objects += 1
        LOGGER.warning("%s: %s", where, why)

    def clip(self, where, why):
        self.clipped_boxes += 1
        LOGGER.warning("%s: %s", where, why)

    def summary(self, usable):
        """The one summary line printed when a source is opened."""
        line = (f"dataset {self.source}: {usable} usable images of {self.total}; "
                f"skipped {self.skipped_samples} images, dropped {self.dropped_objects} objects, "
                f"clipped {self.clipped_boxes} boxes")
        if self.skipped_samples or self.dropped_objects or self.clipped_boxes:
            LOGGER.warning("%s", line)
        else:
            LOGGER.info("%s", line)
        return line


def require_dataset_dir(dataset_dir):
    """DataError unless `dataset_dir` is an existing directory."""
    if not os.path.isdir(dataset_dir):
        raise DataError(f"dataset_dir not found: {dataset_dir} (set it in the feed's dataset "
                        f"section or with -d/--dataset_dir)")


def require_usable(records, report):
    """DataError when no record survived; otherwise print the summary line."""
    if not records:
        raise DataError(f"no usable images in {report.source} ({report.total} listed, "
                        f"{report.skipped_samples} skipped; see the warnings above)")
    report.summary(len(records))
    return records


def finish_record(record, for_training, report):
    """Clip boxes to the image, drop degenerate ones, drop crowd boxes for training.

    Returns the record, or None (after a warning) when a training record has no objects left.
    """
    where = record.get("annotation_file", record["im_file"])
    width, height = float(record["w"]), float(record["h"])
    boxes = record["gt_bbox"].astype(np.float32).reshape(-1, 4)
    keep = np.ones(len(boxes), bool)
    for index, box in enumerate(boxes):
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            report.warn_object(where, f"object {index}: degenerate box {box.tolist()}; object dropped")
            keep[index] = False
            continue
        clipped = np.array([min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)], np.float32)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.warn_object(where, f"object {index}: box {box.tolist()} lies outside the "
                                      f"{int(width)}x{int(height)} image; object dropped")
            keep[index] = False
            continue
        if np.abs(clipped - box).max() > CLIP_TOLERANCE_PIXELS:
            report.clip(where, f"object {index}: box {box.tolist()} clipped to the "
                               f"{int(width)}x{int(height)} image")
        boxes[index] = clipped
    for key in ("gt_class", "difficult", "is_crowd"):
        record[key] = np.asarray(record[key], np.int32)[keep]
    record["gt_bbox"] = boxes[keep]
    if for_training:
        not_crowd = record["is_crowd"] == 0
        for key in ("gt_bbox", "gt_class", "difficult", "is_crowd"):
            record[key] = record[key][not_crowd]
        if len(record["gt_bbox"]) == 0:
            report.skip(where, "no objects (none left after the checks above)")
            return None
    record.pop("annotation_file", None)
    return record


def image_size(path):
    """(height, width) of a JPEG or PNG from its header, or None if missing/unreadable/corrupt.

    Reads only the header and the last bytes (a JPEG must end with the EOI
    marker, a PNG with IEND), so checking a whole dataset at start is cheap.
    Other formats fall back to a full decode with OpenCV.
    """
    try:
        with open(path, "rb") as image_file:
            head = image_file.read(65536)
            image_file.seek(0, os.SEEK_END)
            file_size = image_file.tell()
            image_file.seek(max(0, file_size - 16))
            tail = image_file.read()
    except OSError:
        return None
    if head[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in tail:
            return None
        return _jpeg_size(head, path)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in tail or len(head) < 24:
            return None
        width, height = struct.unpack(">II", head[16:24])
        return (height, width) if width > 0 and height > 0 else None
    return _decoded_size(path)


def _jpeg_size(head, path):
    """Walk JPEG markers to the first start-of-frame; (h, w) or None."""
    position = 2
    data = head
    while True:
        if position + 4 > len(data):
            # A huge EXIF block: read the whole file once.
            with open(path, "rb") as image_file:
                data = image_file.read()
            if position + 4 > len(data):
                return None
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        segment_length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if position + 9 > len(data):
                with open(path, "rb") as image_file:
                    data = image_file.read()
                if position + 9 > len(data):
                    return None
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return (height, width) if width > 0 and height > 0 else None
        if segment_length < 2:
            return None
        position += 2 + segment_length


def _decoded_size(path):
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        return None
    return image.shape[0], image.shape[1]


def read_image_rgb(path, apply_exif_orientation=False):
    """Decode an image as an (H, W, 3) uint8 RGB array; None if it cannot be decoded.

    Annotations refer to the stored raster, so EXIF orientation is ignored unless
    asked for (inference on photos, where the user expects the upright view).
    """
    import cv2
    data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
    if data is None or data.size == 0:
        return None
    flags = cv2.IMREAD_COLOR if apply_exif_orientation else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(data, flags)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
