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

What is trusted: the files a dataset config names (`annotation`, `label_list`,
`image_dir`) must resolve inside dataset_dir, symlinks followed (DataError
naming the key otherwise); so must every image and XML path of a list file and
every COCO file_name (the sample is skipped otherwise). A line of a list or
label file is echoed at most LINE_EXCERPT_LIMIT characters long. An image is
used only when its header is sound and all of its compressed data decodes
without a decoder complaint (`checked_image_size`): libjpeg only *warns* about
garbage inside a JPEG and still returns an image.
"""
import logging
import os
import struct
import sys
import tempfile
import threading

import numpy as np

from slim.errors import DataError, shorten

LOGGER = logging.getLogger("slim.data")

# Boxes sticking out of the image by at most this many pixels are clipped
# silently: VOC boxes reach the last pixel (1-based) and COCO floats overshoot.
CLIP_TOLERANCE_PIXELS = 1.0
# Characters of one line of a list or label file echoed in a warning or error.
LINE_EXCERPT_LIMIT = 60
# Largest image used (PIL's decompression-bomb limit): a header may claim any size, and a
# decoded 3-channel image takes 3 bytes a pixel (this limit: about 540 MB).
MAX_IMAGE_PIXELS = 2 * 89478485


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
        """The annotation (list or JSON) file under dataset_dir; DataError when dataset_dir is
        missing or `annotation` resolves outside it."""
        require_dataset_dir(self.dataset_dir)
        return require_inside(self.dataset_dir, "annotation", self.annotation)

    def image_root(self):
        """dataset_dir/image_dir; DataError when `image_dir` resolves outside dataset_dir."""
        return require_inside(self.dataset_dir, "image_dir", self.image_dir)


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
        LOGGER.warning("skipped sample %s: %s", shorten(where), shorten(why, 400))

    def warn_object(self, where, why):
        """One object of a sample is dropped: one warning line, counted."""
        self.dropped_objects += 1
        LOGGER.warning("%s: %s", shorten(where), shorten(why, 400))

    def clip(self, where, why):
        """A box is clipped to its image: one warning line, counted."""
        self.clipped_boxes += 1
        LOGGER.warning("%s: %s", shorten(where), shorten(why, 400))

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
    if os.path.exists(dataset_dir) and not os.path.isdir(dataset_dir):
        raise DataError(f"dataset_dir {shorten(dataset_dir)} is a file, not a directory (name the "
                        f"directory holding the dataset in the feed's dataset section or with -d)")
    if not os.path.isdir(dataset_dir):
        raise DataError(f"dataset_dir not found: {shorten(dataset_dir)} (set it in the feed's dataset "
                        f"section or with -d/--dataset_dir)")


def resolve_inside(dataset_dir, *parts):
    """The real path of os.path.join(dataset_dir, *parts) when it lies inside the real path of
    dataset_dir (symlinks followed), else None; None too for a path that cannot be resolved
    (one with a NUL byte)."""
    try:
        root = os.path.realpath(dataset_dir)
        path = os.path.realpath(os.path.join(dataset_dir, *parts))
        inside = os.path.commonpath([root, path]) == root
    except (ValueError, OSError):  # a NUL byte; on Windows, another drive
        return None
    return path if inside else None


def outside_message(what, value, dataset_dir, limit=LINE_EXCERPT_LIMIT):
    """'<what> '<value>' is outside dataset_dir '<dir>' ...' for a path that escapes the dataset."""
    return (f"{what} '{shorten(value, limit)}' is outside dataset_dir '{shorten(dataset_dir)}' "
            f"(absolute paths, '..' and symlinks out of it are refused); name a file inside "
            f"the dataset directory")


def require_inside(dataset_dir, key, value):
    """os.path.join(dataset_dir, value), or a DataError naming config key `key` when the path
    resolves outside dataset_dir: a dataset config may only name the dataset's own files (the
    lines of a list or label file are echoed in warnings, so any readable file would leak)."""
    if resolve_inside(dataset_dir, value) is None:
        raise DataError(outside_message(key, value, dataset_dir, limit=200))
    return os.path.join(dataset_dir, value)


def line_excerpt(line):
    """At most LINE_EXCERPT_LIMIT characters of one line of a list or label file (str or bytes),
    control characters escaped, to quote in a warning."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "backslashreplace")
    return shorten(line.strip(), LINE_EXCERPT_LIMIT)


def read_text_lines(path, what):
    """The lines of a UTF-8 text file as (line number, text, problem) tuples.

    A line that is not UTF-8 comes as (number, None, why, quoting a short excerpt). A UTF-8
    byte-order mark is dropped; lines end at \\n, \\r\\n or \\r. A file with NUL bytes (binary, or
    UTF-16) is a DataError naming `what` and the path.
    """
    with open(path, "rb") as text_file:
        data = text_file.read()
    if b"\x00" in data:
        raise DataError(f"{what} {shorten(path)} is not a UTF-8 text file (it holds NUL bytes: "
                        f"a binary or UTF-16 file?); save it as UTF-8 text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append((number, raw.decode("utf-8"), None))
        except UnicodeDecodeError as error:
            lines.append((number, None, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                                        f"{error.start + 1}): '{line_excerpt(raw)}'"))
    return lines


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
    data = _read_bytes(path)
    if data is None:
        return None
    cv2 = _cv2()
    image, _ = _decode_checked(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if image is None else image.shape[:2]


# libjpeg reports garbage inside a JPEG's compressed data only as a warning on stderr and still
# returns an image (the damaged part grey or smeared); OpenCV passes on neither. These are the
# libjpeg warnings (jerror.h, JWRN_*) that mean the pixels are not what was encoded.
JPEG_CORRUPTION_WARNINGS = (b"Corrupt JPEG data", b"Premature end of JPEG file",
                            b"Invalid SOS parameters for sequential JPEG",
                            b"Inconsistent progression sequence")
# What decoders print about an image they fail on: our warning line reports it instead.
DECODER_FAILURE_MESSAGES = JPEG_CORRUPTION_WARNINGS + (b"libpng error", b"libpng warning")

# File descriptor 2 is one per process: captures of it must not overlap (decoding threads), and
# a fork must not happen mid-capture (the child would keep the capture file as its stderr).
_STDERR_CAPTURE_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_STDERR_CAPTURE_LOCK.acquire, after_in_parent=_STDERR_CAPTURE_LOCK.release,
                        after_in_child=_STDERR_CAPTURE_LOCK.release)


def _cv2():
    import cv2
    return cv2


def _read_bytes(path):
    """The bytes of a regular file as a uint8 array, or None (missing, not a file, unreadable, empty)."""
    if not os.path.isfile(path):
        return None
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return data if data.size else None


def _write_to_stderr(data):
    """Write bytes to file descriptor 2 (best effort: a closed stderr loses them, as it would)."""
    while data:
        try:
            data = data[os.write(2, data):]
        except OSError:
            return


def _capture_file():
    """An anonymous file in memory (Linux), else a temporary file: a full or read-only temp dir
    must not stop decoding."""
    try:
        return os.fdopen(os.memfd_create("slim-decoder-messages"), "w+b")
    except (AttributeError, OSError):  # not Linux, or memfd refused
        return tempfile.TemporaryFile()


def _run_capturing_stderr(function):
    """(function(), the bytes written to file descriptor 2 meanwhile).

    C libraries (libjpeg, libpng) print to fd 2 directly, out of Python's reach. The capture is
    a file, not a pipe, so no amount of output can block the writer.
    """
    with _STDERR_CAPTURE_LOCK, _capture_file() as capture:
        try:
            sys.stderr.flush()  # what Python already wrote goes out before the switch
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # fd 2 closed: capture anyway, close it again after
            saved = None
        os.dup2(capture.fileno(), 2)
        try:
            result = function()
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
        capture.seek(0)
        return result, capture.read()


def _decode_checked(data, flags):
    """cv2.imdecode(data, flags) judged by what the decoder printed: (image, None) or (None, why).

    The image is refused when it fails to decode or when libjpeg warned that its compressed
    data is corrupt; the decoder's messages about it go into `why`, anything else printed on
    stderr meanwhile (other threads, harmless decoder notes) is passed on unchanged.
    """
    cv2 = _cv2()
    try:
        image, output = _run_capturing_stderr(lambda: cv2.imdecode(data, flags))
    except cv2.error as error:  # OpenCV's own refusals: too many pixels, a size it cannot scale
        return None, f"cannot be decoded (OpenCV: {_message_text(str(error).encode())})"
    lines = output.splitlines(keepends=True)
    corrupt = [line for line in lines if line.startswith(JPEG_CORRUPTION_WARNINGS)]
    if image is not None and not corrupt:
        _write_to_stderr(output)
        return image, None
    complaints = [line for line in lines if line.startswith(DECODER_FAILURE_MESSAGES)]
    _write_to_stderr(b"".join(line for line in lines if not line.startswith(DECODER_FAILURE_MESSAGES)))
    if corrupt:
        return None, f"corrupt JPEG data (libjpeg: {_message_text(corrupt[0])})"
    return None, "cannot be decoded" + (f" ({_message_text(complaints[0])})" if complaints else "")


def _message_text(line):
    return shorten(line.decode("utf-8", "replace").strip(), 100)


def decode_problem(path, size=None):
    """Why the image at `path` (of (height, width) `size` by its header, read if not given)
    cannot be used after decoding all of its data, or None when it decodes cleanly.

    Decodes at 1/8 scale in grey: libjpeg still reads every compressed bit (and so sees every
    corruption a full decode sees) but skips most of the work.
    """
    data = _read_bytes(path)
    if data is None:
        return "image missing, unreadable or empty"
    cv2 = _cv2()
    # OpenCV cannot scale an image of fewer than 8 pixels a side down by 8: decode those whole.
    size = size or image_size(path) or (0, 0)
    scale = cv2.IMREAD_REDUCED_GRAYSCALE_8 if min(size) >= 8 else cv2.IMREAD_GRAYSCALE
    _, problem = _decode_checked(data, scale | cv2.IMREAD_IGNORE_ORIENTATION)
    return problem


def checked_image_size(path):
    """((height, width), None) for an image whose header and compressed data are sound, else
    (None, why). What every source and the inference loader check before using an image."""
    if not os.path.isfile(path):  # also refuses a FIFO or device, which could block a read
        return None, "image not found (or not a regular file)"
    size = image_size(path)
    if size is None:
        return None, "image missing, unreadable or corrupt"
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        return None, (f"image of {size[1]}x{size[0]} pixels is larger than the limit of "
                      f"{MAX_IMAGE_PIXELS} pixels")
    problem = decode_problem(path, size)
    return (None, problem) if problem else (size, None)


def read_image_rgb(path, apply_exif_orientation=False):
    """Decode an image as an (H, W, 3) uint8 RGB array; None if it cannot be decoded or its
    compressed data is corrupt (see `checked_image_size`).

    Annotations refer to the stored raster, so EXIF orientation is ignored unless
    asked for (inference on photos, where the user expects the upright view).
    """
    cv2 = _cv2()
    data = _read_bytes(path)
    if data is None:
        return None
    flags = cv2.IMREAD_COLOR if apply_exif_orientation else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image, _ = _decode_checked(data, flags)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
