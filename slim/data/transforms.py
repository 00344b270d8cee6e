"""YOLOv3 image transforms with OpenCV and numpy.

Every transform is a plain function of (image, boxes, ..., rng) returning new
values; `rng` is a `numpy.random.Generator`, so a sample's augmentation is a
pure function of its seed. Images stay uint8 HWC RGB until `normalize_image`
(cheap canvases for random expand, LUTs for colour), boxes are (N, 4) float32
x1, y1, x2, y2 in pixels until `boxes_to_normalized_cxcywh`.

Training order, as PaddleDetection's YOLOv3 recipe: mixup (first
`mixup_epoch` epochs) -> photometric distortion -> random expand -> random
crop with IoU constraints -> random flip -> resize to the batch's size with a
random interpolation -> boxes to normalized cx, cy, w, h -> pad to a fixed
count -> ImageNet normalisation, CHW float32.
"""
import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Expand canvases are filled with the mean colour, which normalises to ~0.
EXPAND_FILL_RGB = tuple(int(round(v * 255)) for v in IMAGENET_MEAN)
# One float table per channel: uint8 value -> normalised float (a LUT beats float arithmetic).
_NORMALIZE_TABLES = [((np.arange(256, dtype=np.float32) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
                     .astype(np.float32) for c in range(3)]
RANDOM_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA,
                         cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
EVAL_INTERPOLATION = cv2.INTER_CUBIC
CROP_IOU_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def mixup(image_a, boxes_a, labels_a, scores_a, image_b, boxes_b, labels_b, scores_b, rng,
          alpha=1.5, beta=1.5):
    """Blend two samples with weight w ~ Beta(alpha, beta) on a canvas fitting both.

    Both images sit at the top-left of a canvas of the larger height and width
    (so boxes keep their coordinates); boxes and labels are concatenated; the
    scores of a's boxes are multiplied by w and b's by 1 - w. Returns
    (image, boxes, labels, scores, w).
    """
    weight = float(np.clip(rng.beta(alpha, beta), 0.0, 1.0))
    if weight >= 1.0:
        return image_a, boxes_a, labels_a, scores_a, 1.0
    if weight <= 0.0:
        return image_b, boxes_b, labels_b, scores_b, 0.0
    height = max(image_a.shape[0], image_b.shape[0])
    width = max(image_a.shape[1], image_b.shape[1])
    image = cv2.addWeighted(_pad_to(image_a, height, width), weight,
                            _pad_to(image_b, height, width), 1.0 - weight, 0.0)
    boxes = np.concatenate([boxes_a, boxes_b]).astype(np.float32)
    labels = np.concatenate([labels_a, labels_b]).astype(np.int32)
    scores = np.concatenate([scores_a * weight, scores_b * (1.0 - weight)]).astype(np.float32)
    return image, boxes, labels, scores, weight


def _pad_to(image, height, width):
    """Zero-pad an image at the bottom/right to (height, width)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1],
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


def distort_color(image, rng, brightness=32.0, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                  hue=18, probability=0.5):
    """Photometric distortion: brightness, contrast, saturation, hue, each with `probability`.

    Brightness adds U(-brightness, brightness), contrast multiplies by U(contrast),
    both through one lookup table; saturation scales and hue (degrees, OpenCV
    units of 2 degrees) shifts the HSV channels. Either the brightness/contrast
    or the HSV step goes first, at random. Geometry is untouched.
    """
    shift = rng.uniform(-brightness, brightness) if rng.uniform() < probability else 0.0
    gain = rng.uniform(*contrast) if rng.uniform() < probability else 1.0
    saturation_gain = rng.uniform(*saturation) if rng.uniform() < probability else 1.0
    hue_shift = int(round(rng.uniform(-hue, hue) / 2.0)) if rng.uniform() < probability else 0
    hsv_first = rng.uniform() < 0.5

    def apply_affine(img):
        if shift == 0.0 and gain == 1.0:
            return img
        table = np.clip(np.arange(256, dtype=np.float32) * gain + shift, 0, 255).astype(np.uint8)
        return cv2.LUT(img, table)

    def apply_hsv(img):
        if saturation_gain == 1.0 and hue_shift == 0:
            return img
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hue_table = ((np.arange(256) + hue_shift) % 180).astype(np.uint8)
        saturation_table = np.clip(np.arange(256) * saturation_gain, 0, 255).astype(np.uint8)
        hsv[..., 0] = cv2.LUT(hsv[..., 0], hue_table)
        hsv[..., 1] = cv2.LUT(hsv[..., 1], saturation_table)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    if hsv_first:
        return apply_affine(apply_hsv(image))
    return apply_hsv(apply_affine(image))


def random_expand(image, boxes, rng, max_ratio=4.0, probability=0.5, fill=EXPAND_FILL_RGB):
    """Zoom out: place the image at a random offset on a canvas up to `max_ratio` times larger.

    Returns (image, boxes); boxes shift by the offset.
    """
    if rng.uniform() >= probability:
        return image, boxes
    ratio = rng.uniform(1.0, max_ratio)
    if ratio < 1.01:
        return image, boxes
    height, width = image.shape[:2]
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    top = int(rng.integers(0, canvas_h - height + 1))
    left = int(rng.integers(0, canvas_w - width + 1))
    canvas = cv2.copyMakeBorder(image, top, canvas_h - height - top, left, canvas_w - width - left,
                                cv2.BORDER_CONSTANT, value=tuple(float(v) for v in fill))
    shifted = boxes + np.array([left, top, left, top], np.float32)
    return canvas, shifted.astype(np.float32)


def box_iou(box, boxes):
    """IoU of one box (4,) with each of (N, 4) boxes, x1 y1 x2 y2."""
    return _pairwise_iou(np.asarray(box, np.float32)[None], np.asarray(boxes, np.float32))[0]


def _pairwise_iou(boxes_a, boxes_b):
    """(A, B) IoU matrix of x1 y1 x2 y2 boxes."""
    x1 = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    y1 = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    x2 = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    y2 = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-10)


def random_crop(image, boxes, rng, thresholds=CROP_IOU_THRESHOLDS, scale=(0.3, 1.0),
                aspect_ratio=(0.5, 2.0), attempts=50, allow_no_crop=True):
    """IoU-constrained random crop (SSD style), as PaddleDetection's YOLOv3 recipe.

    Pick a minimum-IoU threshold at random (or no crop); try up to `attempts`
    crops of area fraction scale^2 and aspect in `aspect_ratio` whose best IoU
    with a ground-truth box reaches the threshold and which contains at least
    one box centre. Boxes whose centres fall in the crop are kept, clipped to it.
    Returns (image, boxes, kept_indices); the input unchanged when no crop fits.
    """
    all_indices = np.arange(len(boxes))
    if len(boxes) == 0:
        return image, boxes, all_indices
    height, width = image.shape[:2]
    choices = list(thresholds) + (["no_crop"] if allow_no_crop else [])
    order = rng.permutation(len(choices))
    for choice_index in order:
        threshold = choices[choice_index]
        if threshold == "no_crop":
            return image, boxes, all_indices
        # All attempts of this threshold at once; the first acceptable one wins.
        crop_scale = rng.uniform(scale[0], scale[1], attempts)
        low = np.maximum(aspect_ratio[0], crop_scale ** 2)
        high = np.minimum(aspect_ratio[1], crop_scale ** -2.0)
        aspect = rng.uniform(low, high)
        crop_h = (height * crop_scale / np.sqrt(aspect)).astype(np.int64)
        crop_w = (width * crop_scale * np.sqrt(aspect)).astype(np.int64)
        top = rng.integers(0, height - crop_h + 1)
        left = rng.integers(0, width - crop_w + 1)
        crops = np.stack([left, top, left + crop_w, top + crop_h], axis=1).astype(np.float32)
        iou = _pairwise_iou(crops, boxes)
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        inside = ((centers[None, :, 0] > crops[:, None, 0]) & (centers[None, :, 0] < crops[:, None, 2])
                  & (centers[None, :, 1] > crops[:, None, 1]) & (centers[None, :, 1] < crops[:, None, 3]))
        acceptable = ((crop_h >= 2) & (crop_w >= 2) & (iou.max(axis=1) >= threshold)
                      & inside.any(axis=1))
        if not acceptable.any():
            continue
        attempt = int(np.argmax(acceptable))
        crop = crops[attempt]
        kept = boxes[inside[attempt]].copy()
        kept[:, [0, 2]] = np.clip(kept[:, [0, 2]], crop[0], crop[2]) - crop[0]
        kept[:, [1, 3]] = np.clip(kept[:, [1, 3]], crop[1], crop[3]) - crop[1]
        y0, x0 = int(top[attempt]), int(left[attempt])
        cropped = image[y0:y0 + int(crop_h[attempt]), x0:x0 + int(crop_w[attempt])]
        return cropped, kept.astype(np.float32), all_indices[inside[attempt]]
    return image, boxes, all_indices


def random_flip(image, boxes, rng, probability=0.5):
    """Mirror left-right with `probability`; x1' = W - x2, x2' = W - x1."""
    if rng.uniform() >= probability:
        return image, boxes
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return cv2.flip(image, 1), flipped


def resize(image, boxes, height, width, interpolation):
    """Resize to (height, width) (aspect not kept, as YOLOv3) and scale the boxes."""
    source_h, source_w = image.shape[:2]
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    scale = np.array([width / source_w, height / source_h, width / source_w, height / source_h],
                     np.float32)
    return resized, (boxes * scale).astype(np.float32)


def random_interpolation(rng):
    """One of nearest, linear, area, cubic, Lanczos, uniformly."""
    return RANDOM_INTERPOLATIONS[int(rng.integers(len(RANDOM_INTERPOLATIONS)))]


def boxes_to_normalized_cxcywh(boxes, height, width):
    """(N, 4) pixel x1 y1 x2 y2 -> (N, 4) centre x, centre y, width, height in [0, 1]."""
    boxes = boxes.astype(np.float32)
    x1 = np.clip(boxes[:, 0] / width, 0.0, 1.0)
    y1 = np.clip(boxes[:, 1] / height, 0.0, 1.0)
    x2 = np.clip(boxes[:, 2] / width, 0.0, 1.0)
    y2 = np.clip(boxes[:, 3] / height, 0.0, 1.0)
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1).astype(np.float32)


def pad_ground_truth(boxes, labels, scores, num_max_boxes):
    """Pad (or truncate) to `num_max_boxes` rows: zero boxes, label 0, score 0 for padding."""
    count = min(len(boxes), num_max_boxes)
    padded_boxes = np.zeros((num_max_boxes, 4), np.float32)
    padded_labels = np.zeros((num_max_boxes,), np.int32)
    padded_scores = np.zeros((num_max_boxes,), np.float32)
    padded_boxes[:count] = boxes[:count]
    padded_labels[:count] = labels[:count]
    padded_scores[:count] = scores[:count]
    return padded_boxes, padded_labels, padded_scores


def to_chw(image):
    """uint8 HWC -> contiguous uint8 CHW (the layout batches travel in between processes)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def normalize_chw(chw, out=None):
    """uint8 CHW (or NCHW) RGB -> float32, (x / 255 - ImageNet mean) / ImageNet std per channel."""
    normalized = np.empty(chw.shape, np.float32) if out is None else out
    planes = chw.reshape(-1, 3, chw.shape[-2], chw.shape[-1])
    targets = normalized.reshape(planes.shape)
    for index in range(planes.shape[0]):
        for channel in range(3):
            cv2.LUT(planes[index, channel], _NORMALIZE_TABLES[channel], dst=targets[index, channel])
    return normalized


def normalize_image(image):
    """uint8 HWC RGB -> float32 CHW, (x / 255 - ImageNet mean) / ImageNet std."""
    return normalize_chw(to_chw(image))


def denormalize_image(chw):
    """Inverse of `normalize_image` (for drawing and tests): float32 CHW -> uint8 HWC RGB."""
    image = chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def train_transform(image, boxes, labels, rng, size, num_max_boxes, partner=None, normalize=True,
                    expand_max_ratio=4.0):
    """The full YOLOv3 training transform of one sample at input `size` x `size`.

    `partner` is (image, boxes, labels) of the mixup partner, or None for no mixup.
    With `normalize=False` the image stays uint8 CHW (`normalize_chw` finishes it);
    the loader moves uint8 between processes, a quarter of the bytes.
    Returns dict(image (3, size, size) float32, gt_box (num_max_boxes, 4) float32
    normalized cx cy w h, gt_label (num_max_boxes,) int32, gt_score (num_max_boxes,) float32).
    """
    scores = np.ones(len(boxes), np.float32)
    if partner is not None:
        image, boxes, labels, scores, _ = mixup(
            image, boxes, labels, scores,
            partner[0], partner[1], partner[2], np.ones(len(partner[1]), np.float32), rng)
    image = distort_color(image, rng)
    image, boxes = random_expand(image, boxes, rng, max_ratio=expand_max_ratio)
    image, boxes, kept = random_crop(image, boxes, rng)
    labels, scores = labels[kept], scores[kept]
    image, boxes = random_flip(image, boxes, rng)
    image, boxes = resize(image, boxes, size, size, random_interpolation(rng))
    normalized = boxes_to_normalized_cxcywh(boxes, size, size)
    # A box squeezed below a pixel by crop + resize carries no signal.
    visible = (normalized[:, 2] * size >= 1.0) & (normalized[:, 3] * size >= 1.0)
    gt_box, gt_label, gt_score = pad_ground_truth(normalized[visible], labels[visible],
                                                  scores[visible], num_max_boxes)
    chw = to_chw(image)
    return {"image": normalize_chw(chw) if normalize else chw, "gt_box": gt_box, "gt_label": gt_label,
            "gt_score": gt_score}


def eval_preprocessing(height, width):
    """What `eval_transform` (with `normalize_chw`) does to an image, as data: written beside
    exported models (infer_cfg.yml) so that another runtime can repeat it and infer.py can
    tell whether a model was made with this pipeline."""
    return {"channel_order": "RGB", "layout": "NCHW", "dtype": "float32",
            "resize": {"height": int(height), "width": int(width), "interpolation": "cubic",
                       "keep_ratio": False},
            "scale": 1.0 / 255.0,
            "mean": [round(float(value), 6) for value in IMAGENET_MEAN],
            "std": [round(float(value), 6) for value in IMAGENET_STD],
            "formula": "(pixel * scale - mean) / std, per channel",
            "im_size": "the original image's [height, width], int32: boxes come back in its pixels"}


def eval_transform(image, height, width, normalize=True):
    """Eval/test transform: resize to (height, width) with cubic interpolation, normalise.

    With `normalize=False` returns uint8 CHW for `normalize_chw` to finish.
    """
    resized = to_chw(cv2.resize(image, (width, height), interpolation=EVAL_INTERPOLATION))
    return normalize_chw(resized) if normalize else resized
