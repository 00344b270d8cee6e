"""YOLOv3 detection head (config modules `YOLOv3Head` and `MultiClassNMS`).

Parameter names follow FACTS.md §1: `yolo_block.i.{0,1}.{0,1}`, `yolo_block.i.2`
(the route), `yolo_block.i.tip`, `yolo_transition.i` (conv + bn + leaky relu,
`<name>.conv.weights`, `<name>.bn.{scale,offset,mean,var}`) and
`yolo_output.i.conv.{weights,bias}` (plain 1x1 conv).
"""
import dataclasses
import math
import typing

from slim.config.registry import register
from slim.errors import ConfigError, did_you_mean

# Output i predicts at stride DOWNSAMPLE_RATIOS[i] (deepest feature map first).
DOWNSAMPLE_RATIOS = (32, 16, 8)

DEFAULT_ANCHOR_MASKS = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
DEFAULT_ANCHORS = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
                   [116, 90], [156, 198], [373, 326]]


@register
@dataclasses.dataclass(frozen=True)
class MultiClassNMS:
    """Per-class non-maximum suppression of the YOLOv3 boxes (Paddle's multiclass_nms3 op).

    Args:
        background_label: class index to skip (-1: none).
        keep_top_k: boxes kept per image after NMS (-1: all).
        nms_threshold: IoU above which a lower-scored box of the same class is suppressed.
        nms_top_k: boxes per class considered before NMS, highest scores first (-1: all).
        normalized: whether box coordinates are normalized to [0, 1] (false: pixels, +1 in areas).
        score_threshold: boxes scoring below this are dropped before NMS.
    """
    background_label: int = -1
    keep_top_k: int = 100
    nms_threshold: float = 0.45
    nms_top_k: int = 1000
    normalized: bool = False
    score_threshold: float = 0.01


def _nms_from(value):
    """A MultiClassNMS from an instance or a plain mapping of its options."""
    if isinstance(value, MultiClassNMS):
        return value
    if isinstance(value, dict):
        known = {field.name for field in dataclasses.fields(MultiClassNMS)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"YOLOv3Head.nms: unknown key '{unknown[0]}'"
                              f"{did_you_mean(unknown[0], known)}; valid: {', '.join(sorted(known))}")
        return MultiClassNMS(**value)
    raise ConfigError(f"YOLOv3Head.nms: expected a mapping of MultiClassNMS options, "
                      f"got {type(value).__name__} {value!r}")


@register
class YOLOv3Head:
    """YOLOv3 head over three backbone feature maps: detection blocks, YOLOv3 loss, box decoding + NMS.

    Args:
        anchor_masks: for each of the three outputs (stride 32, 16, 8), the indices into
            `anchors` it predicts.
        anchors: [width, height] of every anchor box, in input-image pixels.
        norm_decay: L2 weight decay of the batch norm scale and offset.
        num_classes: number of object classes (shared with the top-level key).
        ignore_thresh: predictions whose best IoU with a ground-truth box exceeds this
            are not penalized as background.
        label_smooth: smooth the class targets in the loss.
        nms: MultiClassNMS options for the eval/infer program.
        width_scale: multiplier of every detection-block and transition conv's channels
            (1.0 is the published model; small values make CPU demos fast). Names are unchanged.
        objectness_prior: initial objectness probability of every prediction: the objectness
            biases of yolo_output.i start at log(p / (1 - p)) (null: zero biases, p = 0.5, as
            published). 0.01 keeps the background's loss small at the start of training from
            scratch, whose gradients otherwise blow up the first convs' weights.
    """
    __shared__ = ["num_classes"]

    def __init__(self, anchor_masks: typing.List[typing.List[int]] = DEFAULT_ANCHOR_MASKS,
                 anchors: typing.List[typing.List[int]] = DEFAULT_ANCHORS, norm_decay: float = 0.,
                 num_classes: int = 80, ignore_thresh: float = 0.7,
                 label_smooth: bool = False, nms: MultiClassNMS = MultiClassNMS(),
                 width_scale: float = 1.0, objectness_prior: typing.Optional[float] = None):
        self.anchors = [[int(v) for v in anchor] for anchor in anchors]
        if any(len(anchor) != 2 for anchor in self.anchors):
            raise ConfigError(f"YOLOv3Head.anchors: every anchor must be [width, height], got {anchors}")
        self.anchor_masks = [[int(i) for i in mask] for mask in anchor_masks]
        if len(self.anchor_masks) != len(DOWNSAMPLE_RATIOS):
            raise ConfigError(f"YOLOv3Head.anchor_masks: need {len(DOWNSAMPLE_RATIOS)} masks "
                              f"(one per output, strides {list(DOWNSAMPLE_RATIOS)}), "
                              f"got {len(self.anchor_masks)}")
        for mask in self.anchor_masks:
            if not mask or any(not 0 <= i < len(self.anchors) for i in mask):
                raise ConfigError(f"YOLOv3Head.anchor_masks: {mask} must be a non-empty list of "
                                  f"indices into the {len(self.anchors)} anchors")
        if int(num_classes) < 1:
            raise ConfigError(f"YOLOv3Head.num_classes: must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.norm_decay = float(norm_decay)
        self.ignore_thresh = float(ignore_thresh)
        self.label_smooth = bool(label_smooth)
        self.nms = _nms_from(nms)
        if not float(width_scale) > 0:
            raise ConfigError(f"YOLOv3Head.width_scale: must be > 0, got {width_scale}")
        self.width_scale = float(width_scale)
        if objectness_prior is not None and not 0 < float(objectness_prior) < 1:
            raise ConfigError(f"YOLOv3Head.objectness_prior: must be in (0, 1) or null, "
                              f"got {objectness_prior}")
        self.objectness_prior = None if objectness_prior is None else float(objectness_prior)

    def __repr__(self):
        return (f"YOLOv3Head(num_classes={self.num_classes}, anchor_masks={self.anchor_masks}, "
                f"nms={self.nms})")

    def mask_anchors(self, output_index):
        """Flat [w0, h0, w1, h1, ...] of the anchors predicted by output `output_index`."""
        return [v for i in self.anchor_masks[output_index] for v in self.anchors[i]]

    def scaled_channels(self, channels):
        """`channels` times width_scale, rounded down as the backbone does, at least 1."""
        return max(1, int(channels * self.width_scale))

    def output_channels(self, output_index):
        """Channels of yolo_output.i: anchors x (4 box + 1 objectness + classes)."""
        return len(self.anchor_masks[output_index]) * (5 + self.num_classes)

    def output_initial_bias(self, output_index):
        """Initial bias of yolo_output.i: zeros, except log(p / (1 - p)) for each anchor's
        objectness channel when objectness_prior p is set; None for all zeros."""
        if self.objectness_prior is None:
            return None
        p = self.objectness_prior
        bias = [0.0] * self.output_channels(output_index)
        for anchor in range(len(self.anchor_masks[output_index])):
            bias[anchor * (5 + self.num_classes) + 4] = math.log(p / (1 - p))
        return bias

    def outputs(self, features, is_test):
        """Append the detection blocks; `features` shallowest first; returns the raw outputs,
        deepest (stride 32) first."""
        from slim.model import layers
        blocks = list(features)[::-1]
        outputs, route = [], None
        for i, block in enumerate(blocks):
            if i > 0:
                import paddle
                block = paddle.concat([route, block], axis=1)
            route, tip = self._detection_block(block, self.scaled_channels(512 // (2 ** i)),
                                               f"yolo_block.{i}", is_test)
            outputs.append(layers.conv_with_bias(tip, self.output_channels(i), f"yolo_output.{i}",
                                                 initial_bias=self.output_initial_bias(i)))
            if i < len(blocks) - 1:
                route = layers.conv_bn_leaky(route, self.scaled_channels(256 // (2 ** i)), 1, 1, 0,
                                             f"yolo_transition.{i}", self.norm_decay, is_test)
                route = layers.upsample_nearest_2x(route)
        return outputs

    def _detection_block(self, block, channels, name, is_test):
        from slim.model import layers
        conv = block
        for j in range(2):
            conv = layers.conv_bn_leaky(conv, channels, 1, 1, 0, f"{name}.{j}.0",
                                        self.norm_decay, is_test)
            conv = layers.conv_bn_leaky(conv, channels * 2, 3, 1, 1, f"{name}.{j}.1",
                                        self.norm_decay, is_test)
        route = layers.conv_bn_leaky(conv, channels, 1, 1, 0, f"{name}.2", self.norm_decay, is_test)
        tip = layers.conv_bn_leaky(route, channels * 2, 3, 1, 1, f"{name}.tip",
                                   self.norm_decay, is_test)
        return route, tip

    def losses(self, outputs, gt_box, gt_label, gt_score):
        """Per-output YOLOv3 loss, each averaged over the batch."""
        import paddle
        losses = []
        flat_anchors = [v for anchor in self.anchors for v in anchor]
        for i, output in enumerate(outputs):
            per_image = paddle.vision.ops.yolo_loss(
                output, gt_box=gt_box, gt_label=gt_label, gt_score=gt_score,
                anchors=flat_anchors, anchor_mask=self.anchor_masks[i],
                class_num=self.num_classes, ignore_thresh=self.ignore_thresh,
                downsample_ratio=DOWNSAMPLE_RATIOS[i], use_label_smooth=self.label_smooth)
            losses.append(paddle.mean(per_image))
        return losses

    def detections(self, outputs, im_size):
        """Decode every output with yolo_box and run multiclass NMS; returns (bbox, rois_num)."""
        import paddle

        from slim.model import layers
        boxes, scores = [], []
        for i, output in enumerate(outputs):
            box, score = paddle.vision.ops.yolo_box(
                output, img_size=im_size, anchors=self.mask_anchors(i),
                class_num=self.num_classes, conf_thresh=self.nms.score_threshold,
                downsample_ratio=DOWNSAMPLE_RATIOS[i])
            boxes.append(box)
            scores.append(paddle.transpose(score, perm=[0, 2, 1]))
        all_boxes = paddle.concat(boxes, axis=1)
        all_scores = paddle.concat(scores, axis=2)
        return layers.multiclass_nms(all_boxes, all_scores, self.nms)
