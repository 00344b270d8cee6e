"""Calibration images: where they come from, how they are preprocessed, which are held out.

    preprocess = Preprocess.for_model(model_dir, ["size=48,320", "fit=pad", "mean=0.5",
                                                  "std=0.5", "order=bgr"])
    images = CalibrationSet.from_source("lines/", preprocess, num_images=500, held_out=50)
    for feeds in images.batches(images.calibration, batch_size=8): ...

Source: a directory (searched recursively for .jpg/.jpeg/.png/.bmp/.webp/.tif, sorted) or
a list file (one path a line, relative paths from the list's directory, `#` comments).
Images that cannot be read are skipped with one warning each and a count. The first
`held_out` readable images (after a seeded shuffle) are kept for the fidelity report and
never used to choose or fit anything; the rest (at most `num_images` in all) calibrate.

Preprocessing, in this order of precedence: the model dir's infer_cfg.yml (slim's own
`preprocess` mapping, or PaddleDetection's `Preprocess` list), then `--preprocess KEY=VALUE`
options, each overriding what the file said:

    size=H,W      resize to H x W (the default when the feed's H and W are fixed)
    fit=stretch   (default) or pad: keep the aspect ratio, scale to fit H x W, pad the
                  right / bottom with zeros after normalizing (PaddleOCR's recognizer input)
    multiple=M    keep the image's own size, rounded to a multiple of M (with max_side)
    max_side=S    with multiple: scale down so the longer side is at most S (default 960)
    mean=a,b,c    per channel, after scale (one value: all channels); default ImageNet's
    std=a,b,c     likewise
    scale=F       raw pixel values (0..255) are multiplied by F first (default 1/255)
    order=rgb     channel order the model reads: rgb (default) or bgr
"""
import dataclasses
import os
import sys

import numpy as np

from slim.errors import UserError, shorten

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_SIDE = 960
PREPROCESS_KEYS = ("size", "fit", "multiple", "max_side", "mean", "std", "scale", "order")
FITS = ("stretch", "pad")
ORDERS = ("rgb", "bgr")
SPLIT_SEED = 0
# Feeds beside the image that exported detectors take, filled from each image's sizes.
SIZE_FEEDS = ("im_size", "im_shape")
SCALE_FEEDS = ("scale_factor",)


class ImagesError(UserError):
    """The calibration images or their preprocessing options are unusable."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How a BGR uint8 image (as OpenCV reads it) becomes a CHW float32 model input."""
    size: object = None          # (H, W) or None (keep the image's size, see multiple)
    fit: str = "stretch"
    multiple: int = 32
    max_side: int = DEFAULT_MAX_SIDE
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    scale: float = 1.0 / 255.0
    order: str = "rgb"
    source: str = "defaults"     # where it came from, for the report

    @classmethod
    def parse(cls, options, base=None, source="--preprocess"):
        """`base` (a Preprocess, default the defaults) with the KEY=VALUE `options` put in;
        one-line ImagesError naming the option otherwise."""
        values = dataclasses.asdict(base or cls())
        for option in options or ():
            key, sep, value = str(option).partition("=")
            if not sep or key not in PREPROCESS_KEYS:
                raise ImagesError(f"--preprocess '{shorten(option, 60)}': expected KEY=VALUE with "
                                  f"KEY one of {', '.join(PREPROCESS_KEYS)}")
            values[key] = _parse_value(key, value, option)
        if base is not None and options:
            source = f"{base.source} + {source}" if base.source != "defaults" else source
        values["source"] = source if options or base is None else base.source
        return cls(**values)

    @classmethod
    def for_model(cls, model_dir, options=(), feed_shape=None):
        """The model dir's infer_cfg.yml preprocessing (when there is one), then `options`;
        with neither a size nor the file, the feed's fixed H and W (`feed_shape`)."""
        base = read_infer_cfg(model_dir)
        if base is None and feed_shape is not None and len(feed_shape) == 4 and \
                feed_shape[2] > 0 and feed_shape[3] > 0:
            base = cls(size=(int(feed_shape[2]), int(feed_shape[3])), source="the feed's shape")
        return cls.parse(options, base) if options else (base or cls())

    def apply(self, image):
        """(CHW float32 input, (height, width) of the original, (sy, sx) resize factors)."""
        import cv2
        height, width = image.shape[:2]
        if self.size is None:
            factor = min(1.0, self.max_side / max(height, width))
            target = [max(self.multiple, int(round(d * factor / self.multiple)) * self.multiple)
                      for d in (height, width)]
            resized = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
            padded_to = None
        elif self.fit == "pad":
            out_h, out_w = self.size
            factor = min(out_h / height, out_w / width)
            new_h = max(1, min(out_h, int(round(height * factor))))
            new_w = max(1, min(out_w, int(round(width * factor))))
            resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            padded_to = (out_h, out_w)
        else:
            resized = cv2.resize(image, (self.size[1], self.size[0]),
                                 interpolation=cv2.INTER_LINEAR)
            padded_to = None
        if self.order == "rgb":
            resized = resized[:, :, ::-1]
        array = resized.astype(np.float32) * np.float32(self.scale)
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        chw = np.ascontiguousarray(array.transpose(2, 0, 1))
        if padded_to is not None:
            full = np.zeros((3,) + tuple(padded_to), np.float32)
            full[:, :chw.shape[1], :chw.shape[2]] = chw
            chw = full
        factors = (resized.shape[0] / height, resized.shape[1] / width)
        return chw, (height, width), factors

    def describe(self):
        """A JSON-ready record of the preprocessing (for report.json)."""
        record = dataclasses.asdict(self)
        record["size"] = list(self.size) if self.size else None
        record["mean"], record["std"] = list(self.mean), list(self.std)
        return record


def _floats(value, option, count=None):
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if not numbers or (count and len(numbers) not in (1, count)):
        raise ImagesError(f"--preprocess '{shorten(option, 60)}': expected "
                          f"{'1 or ' + str(count) if count else 'one'} number(s)")
    return numbers * count if count and len(numbers) == 1 else numbers


def _parse_value(key, value, option):
    if key in ("mean", "std"):
        numbers = _floats(value, option, 3)
        if key == "std" and any(n == 0 for n in numbers):
            raise ImagesError(f"--preprocess '{shorten(option, 60)}': std must not be 0")
        return numbers
    if key == "scale":
        text = value.strip()
        if text.startswith("1/"):
            denominator = _floats(text[2:], option)[0]
            if denominator == 0:
                raise ImagesError(f"--preprocess '{shorten(option, 60)}': division by 0")
            return 1.0 / denominator
        return _floats(text, option)[0]
    if key == "size":
        try:
            dims = tuple(int(part) for part in value.replace("x", ",").split(","))
        except ValueError:
            dims = ()
        if len(dims) != 2 or min(dims) < 1:
            raise ImagesError(f"--preprocess '{shorten(option, 60)}': expected size=H,W with "
                              "positive integers, e.g. size=224,224")
        return dims
    if key in ("multiple", "max_side"):
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise ImagesError(f"--preprocess '{shorten(option, 60)}': expected a positive "
                              "integer")
        return number
    choices = FITS if key == "fit" else ORDERS
    if value.lower() not in choices:
        raise ImagesError(f"--preprocess '{shorten(option, 60)}': {key} must be one of "
                          f"{', '.join(choices)}")
    return value.lower()


def read_infer_cfg(model_dir):
    """The Preprocess an infer_cfg.yml in `model_dir` describes, or None without one.
    Reads slim's own format (a `preprocess` mapping) and PaddleDetection's (a `Preprocess`
    list of Resize / NormalizeImage / Permute steps)."""
    import yaml
    path = os.path.join(model_dir, "infer_cfg.yml")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise ImagesError(f"{shorten(path)}: cannot read it ({str(error).splitlines()[0]}); "
                          "fix it or remove it and give --preprocess") from None
    if not isinstance(config, dict):
        raise ImagesError(f"{shorten(path)}: not a mapping; give --preprocess instead")
    values = {"source": path}
    own = config.get("preprocess")
    steps = config.get("Preprocess")
    try:
        if isinstance(own, dict):
            resize = own.get("resize") or {}
            if resize.get("height") and resize.get("width"):
                values["size"] = (int(resize["height"]), int(resize["width"]))
                values["fit"] = "pad" if resize.get("keep_ratio") else "stretch"
            values["order"] = str(own.get("channel_order", "RGB")).lower()
            for key in ("mean", "std"):
                if own.get(key) is not None:
                    values[key] = tuple(float(v) for v in own[key])
            if own.get("scale") is not None:
                values["scale"] = float(own["scale"])
        elif isinstance(steps, list):
            values["scale"] = 1.0
            for step in steps:
                kind = step.get("type") if isinstance(step, dict) else None
                if kind in ("Resize", "ResizeOp"):
                    size = step.get("target_size")
                    if size:
                        values["size"] = (int(size[0]), int(size[1]))
                    values["fit"] = "pad" if step.get("keep_ratio") else "stretch"
                elif kind in ("NormalizeImage", "NormalizeImageOp"):
                    values["mean"] = tuple(float(v) for v in step.get("mean", IMAGENET_MEAN))
                    values["std"] = tuple(float(v) for v in step.get("std", IMAGENET_STD))
                    values["scale"] = 1.0 / 255.0 if step.get("is_scale", True) else 1.0
        else:
            raise ImagesError(f"{shorten(path)}: no 'preprocess' mapping or 'Preprocess' list; "
                              "give --preprocess instead")
    except (TypeError, ValueError, IndexError, AttributeError) as error:
        raise ImagesError(f"{shorten(path)}: malformed preprocessing ({error}); give "
                          "--preprocess instead") from None
    if values.get("order", "rgb") not in ORDERS:
        raise ImagesError(f"{shorten(path)}: channel_order '{shorten(values['order'], 20)}' is "
                          f"not one of {', '.join(ORDERS)}")
    return Preprocess(**values)


def list_images(source):
    """Image paths of `source`: a directory (recursive, sorted) or a list file."""
    if os.path.isdir(source):
        found = []
        for directory, subdirs, files in os.walk(source):
            subdirs.sort()
            found.extend(os.path.join(directory, name) for name in sorted(files)
                         if name.lower().endswith(IMAGE_SUFFIXES))
        if not found:
            raise ImagesError(f"--images '{shorten(source)}' holds no image "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        return found
    if not os.path.isfile(source):
        raise ImagesError(f"--images '{shorten(source)}' does not exist; give a directory of "
                          "images or a list file (one path a line)")
    base = os.path.dirname(os.path.abspath(source))
    try:
        with open(source, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as error:
        raise ImagesError(f"--images '{shorten(source)}': cannot read it as a list file "
                          f"({error.__class__.__name__})") from None
    paths = [line if os.path.isabs(line) else os.path.join(base, line)
             for line in lines if line and not line.startswith("#")]
    if not paths:
        raise ImagesError(f"--images '{shorten(source)}' lists no image")
    return paths


def read_image(path):
    """The BGR uint8 image at `path`, or None when it cannot be decoded."""
    import cv2
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 2:
        return None
    return image


@dataclasses.dataclass
class Sample:
    """One preprocessed image: its path, CHW input, original (h, w) and resize factors."""
    path: str
    image: np.ndarray
    original_size: tuple
    factors: tuple


@dataclasses.dataclass
class CalibrationSet:
    """Preprocessed images split into `calibration` (to choose and fit) and `held_out`
    (to report on), plus what was skipped."""
    calibration: list
    held_out: list
    preprocess: Preprocess
    skipped: list          # (path, reason)
    source: str = ""

    @classmethod
    def from_source(cls, source, preprocess, num_images=None, held_out=0, seed=SPLIT_SEED,
                    log=None):
        """Read, preprocess and split the images of `source` (see the module docstring).
        `num_images` caps the readable images used in all (held-out ones included);
        `held_out` is a count, or a float fraction of the readable images."""
        log = log or (lambda message: print(message, file=sys.stderr))
        paths = list_images(source)
        order = np.random.default_rng(seed).permutation(len(paths))
        samples, skipped = [], []
        wanted = num_images if num_images else len(paths)
        for index in order:
            if len(samples) >= wanted:
                break
            path = paths[int(index)]
            image = read_image(path)
            if image is None:
                skipped.append((path, "cannot be read as an image"))
                log(f"warning: skipping image '{shorten(path)}': cannot be read as an image")
                continue
            chw, original, factors = preprocess.apply(image)
            samples.append(Sample(path, chw, original, factors))
        if skipped:
            log(f"warning: {len(skipped)} of {len(skipped) + len(samples)} images skipped "
                "(unreadable)")
        if isinstance(held_out, float):  # a fraction of the readable images, at least 1
            held_out = max(1, int(round(held_out * len(samples)))) if len(samples) > 1 else 1
        if len(samples) <= held_out:
            raise ImagesError(f"--images '{shorten(source)}': {len(samples)} readable image(s), "
                              f"need more than the {held_out} held out for the report")
        return cls(samples[held_out:], samples[:held_out], preprocess, skipped, source)

    def describe(self):
        """JSON-ready summary for report.json."""
        return {"source": self.source, "calibration": len(self.calibration),
                "held_out": len(self.held_out), "skipped": len(self.skipped),
                "skipped_examples": [{"path": p, "reason": r} for p, r in self.skipped[:5]],
                "preprocess": self.preprocess.describe()}


def feeds_of(samples, feed_names, feed_dtypes=None):
    """The feed dict of a batch of samples of one input size: the image feed (the first
    feed with 4 dims, or the only one) gets the stacked CHW inputs; `im_size` / `im_shape`
    the original (h, w), `scale_factor` the resize factors. ImagesError for any other."""
    feed_dtypes = feed_dtypes or {}
    images = np.stack([sample.image for sample in samples])
    feeds = {}
    image_feed = next((name for name in feed_names if feed_dtypes.get(name, (None, 4))[1] == 4),
                      feed_names[0])
    for name in feed_names:
        dtype = feed_dtypes.get(name, ("float32", None))[0]
        if name == image_feed:
            feeds[name] = images.astype(dtype)
        elif name in SIZE_FEEDS:
            feeds[name] = np.asarray([s.original_size for s in samples]).astype(dtype)
        elif name in SCALE_FEEDS:
            feeds[name] = np.asarray([s.factors for s in samples]).astype(dtype)
        else:
            raise ImagesError(f"feed '{shorten(name, 60)}' is neither the image nor one of "
                              f"{', '.join(SIZE_FEEDS + SCALE_FEEDS)}: calibration images "
                              "cannot fill it")
    return feeds


def batches(samples, batch_size):
    """Lists of at most `batch_size` samples of one input shape, in order."""
    by_shape = {}
    for sample in samples:
        by_shape.setdefault(sample.image.shape, []).append(sample)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            yield group[start: start + batch_size]
