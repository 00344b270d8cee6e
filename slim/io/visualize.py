"""Drawing detections on images: boxes, class names and scores (OpenCV)."""
import colorsys

import numpy as np


def class_color(label):
    """A distinct, stable BGR colour for class `label` (golden-ratio hue steps)."""
    hue = (int(label) * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def kept_detections(detections, threshold):
    """Rows [label, score, x1, y1, x2, y2] with score >= threshold, highest score first."""
    from slim.metrics import as_detection_rows
    rows = as_detection_rows(detections)
    rows = rows[rows[:, 1] >= threshold]
    return rows[np.argsort(-rows[:, 1], kind="stable")]


def draw_detections(image_bgr, detections, class_names, threshold=0.5):
    """A copy of `image_bgr` with every detection scoring at least `threshold` drawn as a box
    with a '<class> <score>' label; also returns the drawn rows."""
    import cv2
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.35, min(height, width) / 900)
    rows = kept_detections(detections, threshold)
    for label, score, x1, y1, x2, y2 in rows[::-1]:  # best drawn last, on top
        color = class_color(label)
        top_left = (int(round(max(0, x1))), int(round(max(0, y1))))
        bottom_right = (int(round(min(width - 1, x2))), int(round(min(height - 1, y2))))
        cv2.rectangle(canvas, top_left, bottom_right, color, thickness)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        text_top = top_left[1] - text_h - baseline - 2
        if text_top < 0:  # no room above the box: put the label inside it
            text_top = top_left[1]
        cv2.rectangle(canvas, (top_left[0], text_top),
                      (top_left[0] + text_w + 2, text_top + text_h + baseline + 2), color, -1)
        cv2.putText(canvas, text, (top_left[0] + 1, text_top + text_h + 1),
                    cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas, rows


def side_by_side(rows, titles, gap=6, scale=2):
    """One BGR image of `rows` ([[image path, ...], ...], one list per row, one image per
    column) with a title strip over each column (`titles`), every image enlarged `scale`
    times (nearest neighbour, so drawn boxes stay sharp) and padded to the widest: the
    baseline | pruned picture of the demo."""
    import cv2
    images = [[cv2.imread(path, cv2.IMREAD_COLOR) for path in row] for row in rows]
    images = [[cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
               for image in row] for row in images]
    cell_w = max(image.shape[1] for row in images for image in row)
    cell_h = max(image.shape[0] for row in images for image in row)
    strip = 28
    columns = len(titles)
    canvas = np.full((strip + len(images) * (cell_h + gap), columns * (cell_w + gap) - gap, 3),
                     255, np.uint8)
    for column, title in enumerate(titles):
        cv2.putText(canvas, title, (column * (cell_w + gap) + 4, strip - 8),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    for index, row in enumerate(images):
        top = strip + index * (cell_h + gap)
        for column, image in enumerate(row):
            left = column * (cell_w + gap)
            canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas
