"""Square crops of a detection dataset's objects and background, for pretraining a backbone
as a classifier (`slim.runs.pretrain`): each object under its class, background patches
that overlap no object by more than BACKGROUND_OVERLAP under an extra label.

Imports: numpy, cv2, slim.data.transforms / records.
"""
import numpy as np

BACKGROUND_OVERLAP = 0.3
# Crop fill outside the image: the ImageNet mean colour, which normalises to ~0.
FILL_RGB = (124, 116, 104)


def object_crop_window(box, rng):
    """(centre x, centre y, side) of a square crop around `box` [x1, y1, x2, y2]: the longest
    side times 1.05-1.4, the centre shifted by up to 10% of the box."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    side = max(width, height) * rng.uniform(1.05, 1.4)
    centre_x = (x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * width
    centre_y = (y1 + y2) / 2 + rng.uniform(-0.1, 0.1) * height
    return centre_x, centre_y, side


def background_crop_window(image_width, image_height, boxes, rng, attempts=10):
    """(centre x, centre y, side) of a square patch that covers at most BACKGROUND_OVERLAP of
    any box's area and lies at most that much inside any box, or None if `attempts` random
    patches all overlap too much."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for _ in range(attempts):
        side = rng.uniform(24, max(25.0, min(image_width, image_height) * 0.6))
        centre_x = rng.uniform(side / 2, max(side / 2, image_width - side / 2))
        centre_y = rng.uniform(side / 2, max(side / 2, image_height - side / 2))
        patch = (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)
        overlap_x = np.clip(np.minimum(patch[2], boxes[:, 2]) - np.maximum(patch[0], boxes[:, 0]), 0, None)
        overlap_y = np.clip(np.minimum(patch[3], boxes[:, 3]) - np.maximum(patch[1], boxes[:, 1]), 0, None)
        overlap = overlap_x * overlap_y
        # neither much of an object in the patch nor a patch mostly inside an object
        if not len(boxes) or max((overlap / areas).max(),
                                 overlap.max() / side ** 2) <= BACKGROUND_OVERLAP:
            return centre_x, centre_y, side
    return None


def crop_square(image, window, size, flip):
    """The square `window` (centre x, centre y, side) of an RGB uint8 image resized to `size`,
    mirrored when `flip`, as a normalised float32 CHW array."""
    import cv2

    from slim.data.transforms import normalize_image
    centre_x, centre_y, side = window
    scale = size / side
    matrix = np.array([[scale, 0, size / 2 - centre_x * scale],
                       [0, scale, size / 2 - centre_y * scale]], np.float32)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=FILL_RGB)
    if flip:
        crop = crop[:, ::-1]
    return normalize_image(np.ascontiguousarray(crop))


def decode_images(records):
    """The RGB uint8 image of every record, decoded once (crops are re-drawn every epoch)."""
    from slim.data import records as records_lib
    return [records_lib.read_image_rgb(record["im_file"]) for record in records]


def make_crops(records, images, num_classes, size, rng, backgrounds_per_image=2):
    """(crops [N, 3, size, size] float32, labels [N] int64) for one epoch: every object of
    `records` (whose decoded `images` are given) under its class, and up to
    `backgrounds_per_image` background patches per image under label `num_classes`."""
    crops, labels = [], []
    for record, image in zip(records, images):
        height, width = image.shape[:2]
        for box, label in zip(record["gt_bbox"], record["gt_class"]):
            crops.append(crop_square(image, object_crop_window(box, rng), size, rng.uniform() < 0.5))
            labels.append(int(label))
        for _ in range(backgrounds_per_image):
            window = background_crop_window(width, height, record["gt_bbox"], rng)
            if window is not None:
                crops.append(crop_square(image, window, size, rng.uniform() < 0.5))
                labels.append(num_classes)
    return np.stack(crops), np.array(labels, np.int64)
