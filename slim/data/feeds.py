"""Feed config modules (`YoloTrainFeed`, `YoloEvalFeed`, `YoloTestFeed`) and `-d` handling.

A feed holds the options of one data pipeline: which dataset, the input
shape, batch size, workers, and the augmentation schedule. `slim.data.loader`
turns a feed into batches. Option names follow the PaddleDetection configs
users paste (FACTS.md §2).
"""
import copy

from slim.config import register
from slim.data.coco import COCODataSet
from slim.data.voc import VOCDataSet
from slim.errors import ConfigError, shorten

DATASET_CLASSES = (VOCDataSet, COCODataSet)
DEFAULT_MULTI_SCALE_SIZES = list(range(320, 608 + 1, 32))


def as_dataset(value, default_annotation):
    """A fresh dataset object from a VOCDataSet/COCODataSet instance or a plain mapping.

    A mapping without `annotation` gets the feed's own default list file, so an
    eval feed given only `dataset_dir` still reads test.txt. Never returns the
    caller's object itself (feeds must not share mutable dataset objects).
    """
    if isinstance(value, DATASET_CLASSES):
        return copy.copy(value)
    if value is None:
        return VOCDataSet(annotation=default_annotation)
    if isinstance(value, dict):
        options = dict(value)
        options.setdefault("annotation", default_annotation)
        unknown = sorted(set(options) - set(VOCDataSet().options()))
        if unknown:
            raise ConfigError(f"unknown dataset option '{shorten(unknown[0])}'; valid: "
                              f"{', '.join(VOCDataSet().options())}")
        return VOCDataSet(**options)
    raise ConfigError(f"dataset must be a mapping, !VOCDataSet or !COCODataSet, "
                      f"got {type(value).__name__}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_image_shape(feed_name, image_shape):
    if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
            or not all(_is_int(v) for v in image_shape) or image_shape[0] != 3
            or min(image_shape) <= 0):
        raise ConfigError(f"{feed_name}.image_shape must be [3, H, W] with positive integers H, W, "
                          f"got {shorten(image_shape)}")
    if image_shape[1] % 32 or image_shape[2] % 32:
        raise ConfigError(f"{feed_name}.image_shape {list(image_shape)}: H and W must be multiples "
                          f"of 32 (the YOLOv3 output stride)")
    return list(image_shape)


def _check_positive(feed_name, key, value, allow_zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{feed_name}.{key} must be an integer >= {0 if allow_zero else 1}, "
                          f"got {shorten(value)}")
    return value


class _Feed:
    """Shared checks and helpers of the three feeds."""
    default_annotation = "trainval.txt"

    def _init_common(self, dataset, image_shape, batch_size, num_workers, samples):
        name = type(self).__name__
        self.dataset = as_dataset(dataset, self.default_annotation)
        self.image_shape = _check_image_shape(name, image_shape)
        self.batch_size = _check_positive(name, "batch_size", batch_size)
        self.num_workers = _check_positive(name, "num_workers", num_workers, allow_zero=True)
        if not isinstance(samples, int) or samples == 0 or samples < -1:
            raise ConfigError(f"{name}.samples must be -1 (all) or a positive count, got {shorten(samples)}")
        self.samples = samples

    def __repr__(self):
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({options})"


@register
class YoloTrainFeed(_Feed):
    """Training data for YOLOv3: augmentation, mixup, multi-scale batches, padded ground truth.

    Batches are dicts of numpy arrays: image (N,3,S,S) float32, gt_box (N,num_max_boxes,4)
    float32 normalized cx,cy,w,h, gt_label (N,num_max_boxes) int32, gt_score
    (N,num_max_boxes) float32 (1 for real boxes, mixup weights when mixed, 0 for padding).

    Args:
        dataset: the training set: a mapping of VOCDataSet options (an annotation ending in .json reads a COCO
            instances file from image_dir), or !VOCDataSet {...}.
        image_shape: [3, H, W]; the training size when multi_scale_sizes is empty.
        multi_scale_sizes: square input sizes (multiples of 32); each batch draws one at random. Empty for
            image_shape only.
        batch_size: images per batch per card.
        shuffle: shuffle the samples every epoch.
        drop_last: drop the last incomplete batch of an epoch.
        num_workers: worker processes decoding and augmenting (0 = in the main process; capped at the CPU
            count).
        bufsize: samples buffered ahead of training, over all workers.
        use_process: use worker processes (true) or threads (false) for num_workers.
        mixup_epoch: mix pairs of images (beta(1.5, 1.5) weights) during the first mixup_epoch passes over the
            data.
        num_max_boxes: ground-truth boxes per image after padding/truncation.
        samples: use only the first N samples of the dataset (-1 for all); for quick runs.
        expand_max_ratio: random expand (zoom out, half the samples) places the image on a canvas up to this
            many times larger; 1 turns it off.
    """
    default_annotation = "trainval.txt"

    def __init__(self, dataset: VOCDataSet = VOCDataSet(annotation="trainval.txt"),  # noqa: B008 (copied)
                 image_shape: list = [3, 608, 608],  # noqa: B006 (read-only default)
                 multi_scale_sizes: list = DEFAULT_MULTI_SCALE_SIZES,
                 batch_size: int = 8, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = 8, bufsize: int = 128, use_process: bool = True,
                 mixup_epoch: int = 250, num_max_boxes: int = 50, samples: int = -1,
                 expand_max_ratio: float = 4.0):
        self._init_common(dataset, image_shape, batch_size, num_workers, samples)
        if not isinstance(multi_scale_sizes, (list, tuple, type(None))):
            raise ConfigError(f"YoloTrainFeed.multi_scale_sizes must be a list of sizes, got "
                              f"{shorten(multi_scale_sizes)}")
        sizes = list(multi_scale_sizes or [])
        bad = [size for size in sizes if not _is_int(size) or size <= 0 or size % 32]
        if bad:
            raise ConfigError(f"YoloTrainFeed.multi_scale_sizes: {shorten(bad[0])} is not a positive "
                              f"multiple of 32")
        self.multi_scale_sizes = sizes
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.bufsize = _check_positive("YoloTrainFeed", "bufsize", bufsize)
        self.use_process = bool(use_process)
        self.mixup_epoch = _check_positive("YoloTrainFeed", "mixup_epoch", mixup_epoch, allow_zero=True)
        self.num_max_boxes = _check_positive("YoloTrainFeed", "num_max_boxes", num_max_boxes)
        if isinstance(expand_max_ratio, bool) or not isinstance(expand_max_ratio, (int, float)) \
                or not 1.0 <= expand_max_ratio <= 16.0:
            raise ConfigError(f"YoloTrainFeed.expand_max_ratio must be a number in [1, 16], "
                              f"got {expand_max_ratio!r}")
        self.expand_max_ratio = float(expand_max_ratio)

    def sizes(self):
        """The input sizes batches are drawn from."""
        return list(self.multi_scale_sizes) or [self.image_shape[1]]


@register
class YoloEvalFeed(_Feed):
    """Evaluation data: resize to image_shape, normalise; keep im_size/im_id and the ground truth.

    Args:
        dataset: the evaluation set: a mapping of VOCDataSet options (an annotation ending in .json reads a
            COCO instances file from image_dir), or !VOCDataSet {...}.
        image_shape: [3, H, W] network input.
        batch_size: images per batch.
        num_workers: worker processes decoding images (0 = in the main process; capped at the CPU count).
        use_process: use worker processes (true) or threads (false) for num_workers.
        samples: evaluate only the first N samples (-1 for all).
    """
    default_annotation = "test.txt"

    def __init__(self, dataset: VOCDataSet = VOCDataSet(annotation="test.txt"),  # noqa: B008 (copied)
                 image_shape: list = [3, 608, 608],  # noqa: B006 (read-only default)
                 batch_size: int = 8, num_workers: int = 8, use_process: bool = False,
                 samples: int = -1):
        self._init_common(dataset, image_shape, batch_size, num_workers, samples)
        self.use_process = bool(use_process)


@register
class YoloTestFeed(_Feed):
    """Inference data (infer.py): images from a directory or file list, resized and normalised.

    Only the dataset's label names are used (for drawing); images come from --infer_img/--infer_dir.

    Args:
        dataset: where the class names come from: use_default_label for the VOC classes, or label_list under
            dataset_dir.
        image_shape: [3, H, W] network input.
        batch_size: images per batch.
        num_workers: worker processes decoding images (0 = in the main process).
    """
    default_annotation = "test.txt"

    def __init__(self, dataset: VOCDataSet = VOCDataSet(annotation="test.txt"),  # noqa: B008 (copied)
                 image_shape: list = [3, 608, 608],  # noqa: B006 (read-only default)
                 batch_size: int = 1, num_workers: int = 0):
        self._init_common(dataset, image_shape, batch_size, num_workers, -1)


FEED_CLASSES = (YoloTrainFeed, YoloEvalFeed, YoloTestFeed)


def set_dataset_dir(config, dataset_dir):
    """Apply `-d/--dataset_dir`: set dataset_dir of every feed section's dataset in `config`.

    `config` maps section names to option dicts (or to built feed objects); the
    dataset of each is replaced by a copy, never mutated, so defaults stay intact.
    Returns the names of the sections changed.
    """
    if dataset_dir is None:
        return []
    changed = []
    for section_name in list(config.keys()):
        section = config[section_name]
        if isinstance(section, FEED_CLASSES):
            section.dataset = _with_dir(section.dataset, dataset_dir)
            changed.append(section_name)
        elif isinstance(section, dict) and "dataset" in section:
            section["dataset"] = _with_dir(section["dataset"], dataset_dir)
            changed.append(section_name)
    return changed


def _with_dir(dataset, dataset_dir):
    if isinstance(dataset, DATASET_CLASSES):
        # A new instance from the options: nothing recorded about the old one carries over.
        return type(dataset)(**dict(dataset.options(), dataset_dir=dataset_dir))
    if isinstance(dataset, dict):
        return dict(dataset, dataset_dir=dataset_dir)
    if dataset is None:
        return {"dataset_dir": dataset_dir}
    raise ConfigError(f"dataset must be a mapping, !VOCDataSet or !COCODataSet, "
                      f"got {type(dataset).__name__}")
