"""YOLOv3 transforms: boxes stay on the objects' pixels through every geometric transform."""
import cv2
import numpy as np
import pytest

from slim.data import transforms

BACKGROUND = (40, 40, 40)
# Distinct, saturated colours far from the background and from the expand fill.
COLORS = [(230, 30, 30), (30, 220, 40), (40, 60, 235), (240, 220, 20), (200, 40, 210)]


def solid_scene(width=200, height=150):
    """A plain background with solid rectangles and ellipses; returns (image, boxes, colors)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[...] = BACKGROUND
    specs = [("rect", 10, 12, 60, 50), ("ellipse", 80, 20, 150, 70), ("rect", 120, 90, 190, 140),
             ("ellipse", 20, 80, 70, 145), ("rect", 85, 95, 105, 120)]
    for (kind, x1, y1, x2, y2), color in zip(specs, COLORS):
        if kind == "rect":
            image[y1:y2, x1:x2] = color
        else:
            cv2.ellipse(image, (((x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2), (x2 - x1, y2 - y1), 0), color, -1)
    # Ground truth = the tight box of each object's drawn pixels.
    boxes = np.stack([pixel_box(image, color, tolerance=0) for color in COLORS])
    return image, boxes, COLORS


def pixel_box(image, color, tolerance=30):
    """Tight box (continuous coords) of the pixels within `tolerance` of `color`, or None."""
    distance = np.abs(image.astype(np.int32) - np.array(color)).max(axis=2)
    ys, xs = np.nonzero(distance <= tolerance)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_boxes_on_pixels(image, boxes, colors, slack=1.0):
    """Each box equals the tight box of its object's pixels within `slack` pixels."""
    assert len(boxes) == len(colors)
    for box, color in zip(boxes, colors):
        found = pixel_box(image, color)
        assert found is not None, f"object of color {color} vanished but its box {box} was kept"
        np.testing.assert_allclose(box, found, atol=slack, err_msg=f"color {color}")


def test_solid_scene_boxes_match_pixels():
    image, boxes, colors = solid_scene()
    assert_boxes_on_pixels(image, boxes, colors, slack=0.0)


def test_flip_moves_boxes_with_pixels():
    image, boxes, colors = solid_scene()
    flipped, flipped_boxes = transforms.random_flip(image, boxes, np.random.default_rng(0), probability=1.0)
    assert not np.array_equal(flipped, image)
    assert_boxes_on_pixels(flipped, flipped_boxes, colors, slack=0.0)
    same, same_boxes = transforms.random_flip(image, boxes, np.random.default_rng(0), probability=0.0)
    assert same is image and np.array_equal(same_boxes, boxes)


@pytest.mark.parametrize("seed", range(6))
def test_expand_moves_boxes_with_pixels(seed):
    image, boxes, colors = solid_scene()
    expanded, expanded_boxes = transforms.random_expand(image, boxes, np.random.default_rng(seed),
                                                        probability=1.0)
    assert expanded.shape[0] > image.shape[0] and expanded.shape[1] > image.shape[1]
    assert expanded.shape[0] <= 4 * image.shape[0] and expanded.shape[1] <= 4 * image.shape[1]
    assert tuple(expanded[0, 0]) == transforms.EXPAND_FILL_RGB or tuple(expanded[-1, -1]) == \
        transforms.EXPAND_FILL_RGB
    assert_boxes_on_pixels(expanded, expanded_boxes, colors, slack=0.0)


def test_expand_max_ratio_one_turns_expand_off():
    image, boxes, _ = solid_scene()
    same, same_boxes = transforms.random_expand(image, boxes, np.random.default_rng(0), max_ratio=1.0,
                                                probability=1.0)
    assert same is image and np.array_equal(same_boxes, boxes)


def test_crop_keeps_boxes_on_pixels_and_drops_objects_whose_centre_left():
    image, boxes, colors = solid_scene()
    cropped_count = 0
    for seed in range(40):
        cropped, cropped_boxes, kept = transforms.random_crop(image, boxes, np.random.default_rng(seed))
        if cropped.shape == image.shape:
            np.testing.assert_array_equal(cropped_boxes, boxes)
            continue
        cropped_count += 1
        assert len(kept) >= 1 and len(kept) == len(cropped_boxes)
        assert (cropped_boxes[:, [0, 2]] >= 0).all() and (cropped_boxes[:, [0, 2]] <= cropped.shape[1]).all()
        assert (cropped_boxes[:, [1, 3]] >= 0).all() and (cropped_boxes[:, [1, 3]] <= cropped.shape[0]).all()
        # A kept object's box is the box of its pixels left in the crop (clipped, not shifted).
        assert_boxes_on_pixels(cropped, cropped_boxes, [colors[i] for i in kept], slack=0.0)
    assert cropped_count >= 10, "random_crop almost never cropped"


def test_crop_respects_the_min_iou_threshold():
    image, boxes, _ = solid_scene()
    checked = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        cropped, _, _ = transforms.random_crop(image, boxes, rng, thresholds=(0.5,), allow_no_crop=False)
        if cropped.shape == image.shape:
            continue
        # Recover the crop window from the pixels: it is a sub-array of the image.
        height, width = cropped.shape[:2]
        matches = [(top, left) for top in range(image.shape[0] - height + 1)
                   for left in range(image.shape[1] - width + 1)
                   if np.array_equal(image[top:top + height, left:left + width], cropped)]
        assert matches
        top, left = matches[0]
        window = np.array([left, top, left + width, top + height], np.float32)
        assert transforms.box_iou(window, boxes).max() >= 0.5
        checked += 1
    assert checked >= 10  # the crop really cropped; otherwise this test checks nothing


def test_resize_scales_boxes_with_pixels():
    image, boxes, colors = solid_scene()
    resized, resized_boxes = transforms.resize(image, boxes, 320, 256, cv2.INTER_NEAREST)
    assert resized.shape == (320, 256, 3)
    # Nearest neighbour moves an edge by less than one target pixel.
    assert_boxes_on_pixels(resized, resized_boxes, colors, slack=1.0)
    for interpolation in transforms.RANDOM_INTERPOLATIONS:
        smooth, smooth_boxes = transforms.resize(image, boxes, 96, 128, interpolation)
        np.testing.assert_allclose(smooth_boxes, boxes * np.array([128 / 200, 96 / 150] * 2), rtol=1e-6)
        assert_boxes_on_pixels(smooth, smooth_boxes, colors, slack=1.5)


def test_geometric_chain_expand_crop_flip_resize_keeps_boxes_on_pixels():
    image, boxes, colors = solid_scene()
    checked = 0
    for seed in range(15):
        rng = np.random.default_rng(seed)
        out, out_boxes = transforms.random_expand(image, boxes, rng, probability=1.0)
        out, out_boxes, kept = transforms.random_crop(out, out_boxes, rng)
        out, out_boxes = transforms.random_flip(out, out_boxes, rng)
        out, out_boxes = transforms.resize(out, out_boxes, 416, 416, cv2.INTER_NEAREST)
        scale = max(416 / out.shape[1], 416 / out.shape[0], 1.0)
        visible = [i for i, box in enumerate(out_boxes) if min(box[2] - box[0], box[3] - box[1]) >= 3]
        assert_boxes_on_pixels(out, out_boxes[visible], [colors[kept[i]] for i in visible], slack=scale)
        checked += len(visible)
    assert checked > 20


def test_mixup_blends_pixels_and_weights_scores():
    image_a, boxes_a, _ = solid_scene()
    image_b = np.full((170, 120, 3), 200, np.uint8)
    image_b[20:60, 30:90] = (0, 0, 0)
    boxes_b = np.array([[30, 20, 90, 60]], np.float32)
    labels_a, labels_b = np.arange(5, dtype=np.int32), np.array([7], np.int32)
    mixed, boxes, labels, scores, weight = transforms.mixup(
        image_a, boxes_a, labels_a, np.ones(5, np.float32),
        image_b, boxes_b, labels_b, np.ones(1, np.float32), np.random.default_rng(3))
    assert 0.0 < weight < 1.0
    assert mixed.shape == (170, 200, 3)
    np.testing.assert_array_equal(boxes, np.concatenate([boxes_a, boxes_b]))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 7])
    np.testing.assert_allclose(scores, [weight] * 5 + [1 - weight], rtol=1e-6)
    canvas_a = np.zeros((170, 200, 3), np.float32)
    canvas_a[:150, :200] = image_a
    canvas_b = np.zeros((170, 200, 3), np.float32)
    canvas_b[:170, :120] = image_b
    expected = canvas_a * weight + canvas_b * (1 - weight)
    assert np.abs(mixed.astype(np.float32) - expected).max() <= 0.51
    # Unmixing the blend inside each of a's boxes gives back its solid colour.
    for box, color in zip(boxes_a, COLORS):
        x1, y1, x2, y2 = box.astype(int)
        center = ((y1 + y2) // 2, (x1 + x2) // 2)
        recovered = (mixed[center].astype(np.float32) - canvas_b[center] * (1 - weight)) / weight
        np.testing.assert_allclose(recovered, color, atol=1.0 / weight + 0.5)


def test_distort_color_keeps_geometry_and_varies_colors():
    image, _, _ = solid_scene()
    unchanged = transforms.distort_color(image, np.random.default_rng(0), probability=0.0)
    np.testing.assert_array_equal(unchanged, image)
    outputs = [transforms.distort_color(image, np.random.default_rng(seed), probability=1.0)
               for seed in range(4)]
    for output in outputs:
        assert output.shape == image.shape and output.dtype == np.uint8
        # A per-pixel colour map: pixels equal before are equal after (no geometric change).
        assert len(np.unique(output.reshape(-1, 3), axis=0)) <= len(np.unique(image.reshape(-1, 3), axis=0))
        np.testing.assert_array_equal(output[15, 15], output[45, 55])  # both in the first rectangle
    assert not all(np.array_equal(outputs[0], other) for other in outputs[1:])


def test_boxes_to_normalized_cxcywh_and_padding():
    boxes = np.array([[10, 20, 50, 100], [0, 0, 200, 100]], np.float32)
    normalized = transforms.boxes_to_normalized_cxcywh(boxes, height=100, width=200)
    np.testing.assert_allclose(normalized, [[0.15, 0.6, 0.2, 0.8], [0.5, 0.5, 1.0, 1.0]], rtol=1e-6)
    padded_boxes, padded_labels, padded_scores = transforms.pad_ground_truth(
        normalized, np.array([3, 4], np.int32), np.array([1.0, 0.25], np.float32), 50)
    assert padded_boxes.shape == (50, 4) and padded_labels.shape == (50,) and padded_scores.shape == (50,)
    np.testing.assert_array_equal(padded_boxes[:2], normalized)
    assert (padded_boxes[2:] == 0).all() and (padded_scores[2:] == 0).all() and (padded_labels[2:] == 0).all()
    many = np.tile(normalized[:1], (60, 1))
    truncated, _, _ = transforms.pad_ground_truth(many, np.zeros(60, np.int32), np.ones(60, np.float32), 50)
    assert truncated.shape == (50, 4)


def test_normalize_image_is_imagenet_chw_and_invertible():
    image, _, _ = solid_scene()
    chw = transforms.normalize_image(image)
    assert chw.shape == (3, 150, 200) and chw.dtype == np.float32
    np.testing.assert_allclose(chw[:, 0, 0], (np.array(BACKGROUND) / 255.0 - transforms.IMAGENET_MEAN)
                               / transforms.IMAGENET_STD, rtol=1e-5)
    np.testing.assert_array_equal(transforms.denormalize_image(chw), image)


def test_train_transform_output_format_and_box_sanity():
    image, boxes, _ = solid_scene()
    labels = np.arange(5, dtype=np.int32)
    for seed in range(5):
        sample = transforms.train_transform(image, boxes, labels, np.random.default_rng(seed), 320, 50)
        assert sample["image"].shape == (3, 320, 320) and sample["image"].dtype == np.float32
        count = int((sample["gt_score"] > 0).sum())
        assert 1 <= count <= 5
        real = sample["gt_box"][:count]
        assert (real >= 0).all() and (real <= 1).all() and (real[:, 2:] > 0).all()
        assert (sample["gt_score"][:count] == 1).all() and (sample["gt_score"][count:] == 0).all()
        assert set(sample["gt_label"][:count]) <= set(labels)
        again = transforms.train_transform(image, boxes, labels, np.random.default_rng(seed), 320, 50)
        for key in sample:
            np.testing.assert_array_equal(sample[key], again[key])


def test_train_transform_with_partner_sets_mixup_scores():
    image, boxes, _ = solid_scene()
    labels = np.arange(5, dtype=np.int32)
    partner = (image[::-1].copy(), np.array([[0, 0, 200, 150]], np.float32), np.array([2], np.int32))
    weights = set()
    for seed in range(4):
        sample = transforms.train_transform(image, boxes, labels, np.random.default_rng(seed), 256, 50,
                                            partner=partner)
        scores = sample["gt_score"][sample["gt_score"] > 0]
        assert (scores <= 1.0).all()
        weights.update(np.round(scores, 5).tolist())
    assert any(0 < w < 1 for w in weights)


def test_eval_transform_resizes_to_image_shape():
    image, _, _ = solid_scene()
    chw = transforms.eval_transform(image, 224, 160)
    assert chw.shape == (3, 224, 160) and chw.dtype == np.float32
    back = transforms.denormalize_image(chw)
    np.testing.assert_array_equal(back[5, 5], BACKGROUND)
