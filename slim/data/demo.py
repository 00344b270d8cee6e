"""The embedded demo dataset: synthetic VOC-format scenes, generated deterministically in seconds.

    python -m slim.data.demo --out dataset/demo [--train 400 --test 100 --seed 0] [--force]

Writes `JPEGImages/*.jpg`, `Annotations/*.xml`, `train.txt`, `test.txt` (lines
`JPEGImages/x.jpg Annotations/x.xml`) and `label_list.txt` (5 classes). Each
scene (192-256 px a side) holds 1-3 objects - circle, square, triangle, star,
cross - of random size (20-60% of the shorter side), aspect, rotation, colour
and texture (solid, stripes, checks, gradient, speckle), placed over a muted
background with greyish clutter (lines, arcs, blobs, dots), overlapping each
other, sometimes cut by the image border or by clutter drawn on top. Objects
are bright and saturated; each class has its own hue band, except one object
in five, which gets any hue, so colour helps but shape still decides (see
`class_hue`). Boxes are the tight box of each object's visible pixels in
continuous pixel coordinates (x2 = last column + 1). Objects that are small
or mostly hidden are marked difficult.

A sample is a pure function of (seed, split, index), so the test split does
not change with --train. The output is built in a temporary directory beside
`--out` and moved in place; an existing `--out` is only replaced if it is a demo
dataset (it holds `.slim_demo.json`); anything else there is a one-line error
before any work.
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np

from slim.errors import ArgumentParser, DataError, exit_on_user_error, shorten
from slim.io.output_places import (
    check_replaceable_dir,
    is_owned_dir,
    make_owned_temp_dir,
    mark_owned,
    remove_owned_dir,
    replace_dir,
)

CLASSES = ("circle", "square", "triangle", "star", "cross")
GENERATOR_VERSION = 3
MARKER_FILE = ".slim_demo.json"
SPLIT_IDS = {"train": 1, "test": 2}
MIN_OBJECT_SIDE = 24
MIN_VISIBLE_FRACTION = 0.45
DIFFICULT_VISIBLE_FRACTION = 0.65
DIFFICULT_MAX_SIDE = 30
# Scenes for the width-0.25 demo model trained from scratch for a few CPU minutes at
# 160-224 px input: 1-3 objects whose longest side is 20-60% of the scene's shorter side,
# bright saturated objects over a muted background with greyish clutter. Each class has its
# own hue band (CLASS_HUE_SPREAD either side of its centre) except CLASS_HUE_RANDOM of the
# objects, which get any hue: colour is a strong cue but not a sufficient one, so shape
# still matters. (Version 2, any hue for any class over bright clutter, did not reach 1% mAP
# in 1000 iterations; see docs/demo.md.)
OBJECTS_PER_SCENE = [1, 2, 2, 3, 3]
OBJECT_SIDE_FRACTION = (0.2, 0.6)
CLUTTER_COUNT = (2, 6)
CLASS_HUE_SPREAD = 8
CLASS_HUE_RANDOM = 0.2


def _unit_polygon(class_name, rng):
    """Outline of a shape as (K, 2) points around the origin (radius ~1), before rotation."""
    if class_name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    if class_name == "triangle":
        angles = np.deg2rad([90, 210, 330]) + rng.uniform(-0.15, 0.15, 3)
        return np.stack([np.cos(angles), -np.sin(angles)], axis=1)
    if class_name == "star":
        points = int(rng.choice([5, 5, 6]))
        inner = rng.uniform(0.38, 0.5)
        angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
        radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
        return np.stack([radii * np.cos(angles), -radii * np.sin(angles)], axis=1)
    if class_name == "cross":
        arm = rng.uniform(0.28, 0.42)
        return np.array([[-arm, -1], [arm, -1], [arm, -arm], [1, -arm], [1, arm], [arm, arm],
                         [arm, 1], [-arm, 1], [-arm, arm], [-1, arm], [-1, -arm], [-arm, -arm]],
                        np.float64)
    raise ValueError(class_name)


def shape_mask(class_name, width, height, rng):
    """A uint8 {0, 1} mask of size (height, width) whose shape touches all four sides."""
    mask = np.zeros((height, width), np.uint8)
    if class_name == "circle":
        ellipse = (((width - 1) / 2.0, (height - 1) / 2.0), (float(width), float(height)), 0.0)
        cv2.ellipse(mask, ellipse, 1, -1)
        return mask
    polygon = _unit_polygon(class_name, rng)
    max_rotation = {"square": 40, "cross": 40, "triangle": 180, "star": 180}[class_name]
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polygon = polygon @ rotation.T
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    scaled = (polygon - low) / (high - low) * np.array([width - 1, height - 1])
    cv2.fillPoly(mask, [np.round(scaled * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _random_color(rng, min_value=60, hue=None, saturation=(60, 256)):
    hue = rng.integers(0, 180) if hue is None else hue
    hsv = np.array([[[hue, rng.integers(*saturation), rng.integers(min_value, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def class_hue(class_index, rng):
    """A hue (OpenCV 0-180) for an object of class `class_index`: within CLASS_HUE_SPREAD of
    the class's centre (class_index * 36), or, for a CLASS_HUE_RANDOM share of objects, any hue."""
    if rng.uniform() < CLASS_HUE_RANDOM:
        return int(rng.integers(0, 180))
    return int(round(class_index * 36 + rng.uniform(-CLASS_HUE_SPREAD, CLASS_HUE_SPREAD))) % 180


def texture(width, height, rng, hue=None):
    """An (height, width, 3) float32 RGB fill: solid, stripes, checks, gradient or speckle,
    in bright, saturated colours of `hue` (None: any hue)."""
    bright = dict(min_value=150, saturation=(140, 256))
    first = _random_color(rng, hue=hue, **bright)
    second = _random_color(rng, hue=None if hue is None else (hue + int(rng.integers(-8, 9))) % 180,
                           **bright)
    kind = rng.choice(["solid", "solid", "stripes", "checks", "gradient", "speckle"])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "solid":
        weight = np.zeros((height, width), np.float32)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12)
        weight = (((xs * np.cos(angle) + ys * np.sin(angle)) / period) % 1.0 < 0.5).astype(np.float32)
    elif kind == "checks":
        period = rng.uniform(4, 10)
        weight = (((xs // period) + (ys // period)) % 2).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    else:
        weight = (rng.uniform(size=(height, width)) < 0.25).astype(np.float32) * 0.6
    fill = first[None, None] * (1 - weight[..., None]) + second[None, None] * weight[..., None]
    return fill + rng.normal(0, 6, (height, width, 1)).astype(np.float32)


def background(width, height, rng):
    """A cluttered float32 RGB background: smooth colour field, noise, lines, arcs, blobs, dots."""
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    # muted (dark, greyish) so that the bright, saturated objects stand out
    grey = image.mean(axis=2, keepdims=True)
    image = (grey + (image - grey) * rng.uniform(0.1, 0.4)) * rng.uniform(0.25, 0.55) + rng.uniform(0, 40)
    image += rng.normal(0, rng.uniform(3, 12), image.shape).astype(np.float32)
    _draw_clutter(image, rng, count=int(rng.integers(CLUTTER_COUNT[0], CLUTTER_COUNT[1] + 1)))
    return image


def _draw_clutter(image, rng, count, thin_only=False):
    height, width = image.shape[:2]
    for _ in range(count):
        color = tuple(float(v) for v in _random_color(rng, min_value=30, saturation=(0, 90)))
        kind = "line" if thin_only else rng.choice(["line", "line", "arc", "blob", "dots"])
        if kind == "line":
            points = rng.integers(0, [width, height], size=(int(rng.integers(2, 4)), 2)).astype(np.int32)
            cv2.polylines(image, [points], False, color, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == "arc":
            center = tuple(int(v) for v in rng.integers(0, [width, height]))
            axes = tuple(int(v) for v in rng.integers(8, 60, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(60, 200)), color, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == "blob":
            # Translucent lumpy stains: a smooth, low-frequency radius, so they resemble
            # none of the classes (no corners, not an ellipse).
            center = rng.integers(0, [width, height])
            angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            radius = rng.uniform(6, 24) * (1 + 0.22 * np.cos(2 * angles + rng.uniform(0, 6.3))
                                           + 0.18 * np.cos(3 * angles + rng.uniform(0, 6.3)))
            points = np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], 1)
            stain = image.copy()
            cv2.fillPoly(stain, [points.astype(np.int32)], color, cv2.LINE_AA)
            alpha = rng.uniform(0.3, 0.6)
            image[...] = image * (1 - alpha) + stain * alpha
        else:
            for _ in range(int(rng.integers(5, 20))):
                center = tuple(int(v) for v in rng.integers(0, [width, height]))
                cv2.circle(image, center, int(rng.integers(1, 3)), color, -1)


def _object_size(image_w, image_h, rng):
    longest = min(image_w, image_h) * np.exp(rng.uniform(np.log(OBJECT_SIDE_FRACTION[0]),
                                                          np.log(OBJECT_SIDE_FRACTION[1])))
    aspect = np.exp(rng.uniform(np.log(0.7), np.log(1.45)))
    width = max(MIN_OBJECT_SIDE, int(round(longest * min(1.0, aspect))))
    height = max(MIN_OBJECT_SIDE, int(round(longest * min(1.0, 1.0 / aspect))))
    return width, height


def _paste(label_map, image, mask, fill, left, top, object_id):
    """Paint `fill` through `mask` at (left, top), clipped to the image; update the label map."""
    height, width = label_map.shape
    mask_h, mask_w = mask.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + mask_w, width), min(top + mask_h, height)
    if x1 <= x0 or y1 <= y0:
        return
    sub_mask = mask[y0 - top:y1 - top, x0 - left:x1 - left].astype(bool)
    image[y0:y1, x0:x1][sub_mask] = fill[y0 - top:y1 - top, x0 - left:x1 - left][sub_mask]
    label_map[y0:y1, x0:x1][sub_mask] = object_id


def make_scene(rng):
    """One synthetic scene: (uint8 RGB image, [dict(name, box [x1, y1, x2, y2], difficult)])."""
    width, height = int(rng.integers(192, 257)), int(rng.integers(192, 257))
    image = background(width, height, rng)
    label_map = np.zeros((height, width), np.int32)
    objects = []  # (class_name, full pixel count)
    for _ in range(int(rng.choice(OBJECTS_PER_SCENE))):
        class_name = CLASSES[int(rng.integers(len(CLASSES)))]
        for _attempt in range(12):
            obj_w, obj_h = _object_size(width, height, rng)
            mask = shape_mask(class_name, obj_w, obj_h, rng)
            # Up to ~30% of an object may fall outside the image (truncated objects).
            left = int(rng.integers(-obj_w // 3, width - 2 * obj_w // 3 + 1))
            top = int(rng.integers(-obj_h // 3, height - 2 * obj_h // 3 + 1))
            trial_map, trial_image = label_map.copy(), image.copy()
            fill = texture(obj_w, obj_h, rng, hue=class_hue(CLASSES.index(class_name), rng))
            _paste(trial_map, trial_image, mask, fill, left, top, len(objects) + 1)
            candidate = objects + [(class_name, int(mask.sum()))]
            if all((trial_map == i + 1).sum() >= MIN_VISIBLE_FRACTION * full
                   for i, (_, full) in enumerate(candidate)):
                label_map, image, objects = trial_map, trial_image, candidate
                break
    _draw_clutter(image, rng, count=int(rng.integers(0, 3)), thin_only=True)  # occluders in front
    if rng.uniform() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    annotations = []
    for index, (class_name, full) in enumerate(objects):
        ys, xs = np.nonzero(label_map == index + 1)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        visible_fraction = len(xs) / full
        difficult = (visible_fraction < DIFFICULT_VISIBLE_FRACTION
                     or max(box[2] - box[0], box[3] - box[1]) < DIFFICULT_MAX_SIDE)
        annotations.append({"name": class_name, "box": box, "difficult": int(difficult)})
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), annotations


def voc_xml(file_name, width, height, annotations):
    """A Pascal VOC annotation document as a string."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "JPEGImages"
    ElementTree.SubElement(root, "filename").text = file_name
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    for annotation in annotations:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = annotation["name"]
        ElementTree.SubElement(obj, "pose").text = "Unspecified"
        ElementTree.SubElement(obj, "truncated").text = "0"
        ElementTree.SubElement(obj, "difficult").text = str(annotation["difficult"])
        box = ElementTree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), annotation["box"]):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def render_sample(seed, split, index):
    """(JPEG bytes, width, height, annotations) of sample `index` of `split` ('train' or
    'test'): a pure function of its arguments, what the dataset writes for it."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    image, annotations = make_scene(rng)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes(), image.shape[1], image.shape[0], annotations


def _write_split(out_dir, split, count, seed):
    lines = []
    for index in range(count):
        data, width, height, annotations = render_sample(seed, split, index)
        stem = f"{split}_{index:05d}"
        with open(os.path.join(out_dir, "JPEGImages", stem + ".jpg"), "wb") as image_file:
            image_file.write(data)
        with open(os.path.join(out_dir, "Annotations", stem + ".xml"), "w", encoding="utf-8") as xml_file:
            xml_file.write(voc_xml(stem + ".jpg", width, height, annotations))
        lines.append(f"JPEGImages/{stem}.jpg Annotations/{stem}.xml\n")
    with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as list_file:
        list_file.writelines(lines)


def is_demo_dataset(path):
    """True when `path` is a directory this generator wrote: it holds MARKER_FILE (every
    demo dataset, older ones included) or the tool's OWNER_MARKER."""
    return is_owned_dir(path) or (os.path.isdir(path) and not os.path.islink(path)
                                  and os.path.isfile(os.path.join(path, MARKER_FILE)))


def _is_up_to_date(out_dir, parameters):
    """True when `out_dir` is a demo dataset made with exactly `parameters`."""
    try:
        with open(os.path.join(out_dir, MARKER_FILE), encoding="utf-8") as marker_file:
            return json.load(marker_file) == parameters
    except (OSError, ValueError):
        return False  # no or unreadable marker: regenerate


def check_demo_out(out_dir):
    """Before any work: `out_dir` must be absent, empty or a demo dataset, and its parent
    writable (the new dataset is built beside it). A one-line error naming it otherwise.
    Returns the absolute path."""
    if str(out_dir).strip() and os.path.isdir(out_dir) and not os.path.islink(out_dir) \
            and not is_demo_dataset(out_dir) and os.listdir(out_dir):
        raise DataError(f"--out '{shorten(out_dir)}' exists and is not a demo dataset (no "
                        f"{MARKER_FILE}); it is left untouched: choose another --out or "
                        "move it away")
    return check_replaceable_dir(out_dir, "--out", is_ours=is_demo_dataset)


def generate_demo_dataset(out_dir, num_train=400, num_test=100, seed=0, force=False):
    """Write the demo dataset to `out_dir`; returns out_dir.

    Skips the work when `out_dir` already holds a demo dataset made with the same
    parameters (unless `force`). Refuses (DataError / OutputPlaceError, before any work)
    an `out_dir` that is a file or a non-empty directory that is not a demo dataset, or
    whose parent cannot be written. The dataset is built in a marked temp dir beside
    `out_dir` and swapped in only when complete.
    """
    if num_train < 1 or num_test < 1:
        raise DataError(f"--train and --test must be at least 1, got {num_train} and {num_test}")
    parameters = {"version": GENERATOR_VERSION, "train": num_train, "test": num_test, "seed": seed,
                  "classes": list(CLASSES)}
    out_dir = check_demo_out(out_dir)
    if not force and _is_up_to_date(out_dir, parameters):
        return out_dir
    temporary = make_owned_temp_dir(os.path.dirname(out_dir),
                                    "." + os.path.basename(out_dir) + ".tmp-")
    try:
        _write_dataset(temporary, parameters)
    except BaseException:
        remove_owned_dir(temporary)
        raise
    if is_demo_dataset(out_dir) and not is_owned_dir(out_dir):
        mark_owned(out_dir)  # a demo dataset written before OWNER_MARKER existed
    replace_dir(temporary, out_dir, "--out")
    return out_dir


def _write_dataset(out_dir, parameters):
    """Every file of the demo dataset of `parameters` into the existing directory `out_dir`."""
    os.makedirs(os.path.join(out_dir, "JPEGImages"))
    os.makedirs(os.path.join(out_dir, "Annotations"))
    for split in ("train", "test"):
        _write_split(out_dir, split, parameters[split], parameters["seed"])
    with open(os.path.join(out_dir, "label_list.txt"), "w", encoding="utf-8") as label_file:
        label_file.write("\n".join(CLASSES) + "\n")
    with open(os.path.join(out_dir, MARKER_FILE), "w", encoding="utf-8") as marker_file:
        json.dump(parameters, marker_file)


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m slim.data.demo", description=__doc__.splitlines()[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="dataset/demo", help="output directory")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--test", type=int, default=100, help="test images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    out_dir = generate_demo_dataset(args.out, args.train, args.test, args.seed, args.force)
    print(f"demo dataset: {out_dir} ({args.train} train, {args.test} test images, "
          f"classes: {', '.join(CLASSES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
