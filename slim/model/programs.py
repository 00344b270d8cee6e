"""Build the YOLOv3 train and eval/infer programs (classic static IR).

    model = YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=3))
    train = build_train_program(model, image_shape=[3, None, None])
    evaluation = build_eval_program(model, image_shape=[3, 608, 608])
    exe.run(train.startup)      # one scope now holds every parameter of both
    exe.run(train.program, feed={...}, fetch_list=[train.fetches["loss"]])

Train program (`build_train_program`), batch norm in train mode:
  feeds   image    float32 [N, 3, H, W] (H, W may be -1: multi-scale training)
          gt_box   float32 [N, B, 4]  ground truth boxes, normalized (cx, cy, w, h),
                   zero rows are padding; B = num_max_boxes (50)
          gt_label int32   [N, B]     class index per box
          gt_score float32 [N, B]     per-box weight (1, or the mixup weight)
  fetches loss     float32 [1]  sum of the three outputs' losses (each a batch mean)
          loss_0, loss_1, loss_2  the loss of output 0 (stride 32), 1 (16), 2 (8)
          output_0, output_1, output_2  raw head outputs [N, A*(5+C), H/s, W/s]

Eval program (`build_eval_program`), batch norm in test mode; it is also the
inference program (exporting prunes the ops that only evaluation needs):
  feeds   image    float32 [N, 3, H, W] (the image resized to image_shape)
          im_size  int32   [N, 2]     original [height, width] of each image
  fetches bbox     float32 [D, 6]  all images' detections after multiclass NMS, image
                   after image; a row is [label, score, x1, y1, x2, y2] with the label a
                   class index (float), the box in original-image pixels (clipped to
                   [0, w-1] x [0, h-1]); within an image rows are grouped by label in
                   ascending order, by score descending within a label, at most keep_top_k
          bbox_num int32   [N]     detections per image: rows bbox[sum(bbox_num[:i]):
                   sum(bbox_num[:i+1])] belong to image i (`split_detections` does it);
                   the LoD of `bbox` (fetched with return_numpy=False) says the same
          output_0, output_1, output_2  raw head outputs, as in the train program

Every parameter has an explicit name (FACTS.md §1) and both programs are built
under a fresh unique-name guard, so they hold the same parameters with the same
names and shapes: running either startup program initializes one scope that
serves both (and a pruned scope serves both after pruning both programs).
"""
import contextlib
import dataclasses
import warnings

import numpy as np

NUM_MAX_BOXES = 50


@dataclasses.dataclass
class BuiltProgram:
    """A built program: its startup program, feed vars and fetch vars (name -> Variable)."""
    program: object
    startup: object
    feeds: dict
    fetches: dict

    @property
    def feed_names(self):
        """Feed var names in feed order."""
        return list(self.feeds)


def _static_shape(image_shape):
    dims = list(image_shape)
    if len(dims) != 3:
        raise ValueError(f"image_shape must be [C, H, W], got {image_shape}")
    return [-1] + [-1 if dim is None else int(dim) for dim in dims]


def _new_programs(pir=False):
    """(main, startup): classic programs, or with `pir` PIR ones (call inside
    `slim.prune.pir.ir_guard(True)`, Paddle 3)."""
    import paddle

    import slim.paddle_env
    from slim.prune.pir import is_pir_program
    main, startup = paddle.static.Program(), paddle.static.Program()
    if not pir:
        slim.paddle_env.assert_classic_program(main)
    elif not is_pir_program(main):
        raise slim.paddle_env.PirModeError("pir=True builds PIR programs: call it inside "
                                           "slim.prune.pir.ir_guard(True) on Paddle 3")
    return main, startup


@contextlib.contextmanager
def _quiet_deprecations():
    """Paddle 3 warns on every call that the classic static layers are deprecated; they are
    what this project builds on (PLATFORM.md), so keep the logs readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*is deprecated since")
        yield


def _check_model(model):
    for part in ("backbone", "yolo_head"):
        if isinstance(getattr(model, part, None), str):
            raise TypeError(f"{type(model).__name__}.{part} is the name '{getattr(model, part)}', "
                            "not a module: build the model with slim.config.create")


def build_train_program(model, image_shape=(3, None, None), num_max_boxes=NUM_MAX_BOXES,
                        pir=False):
    """The training program of `model` (a YOLOv3): feeds image/gt_box/gt_label/gt_score,
    fetches loss (sum), loss_0..2 and output_0..2. See the module docstring. `pir`: a
    Paddle 3 PIR program with the same parameters (inside `ir_guard(True)`; MobileNet
    backbone: ResNet's layers are classic only)."""
    import paddle
    _check_model(model)
    main, startup = _new_programs(pir)
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard(), \
            _quiet_deprecations():
        image = paddle.static.data("image", _static_shape(image_shape), "float32")
        gt_box = paddle.static.data("gt_box", [-1, num_max_boxes, 4], "float32")
        gt_label = paddle.static.data("gt_label", [-1, num_max_boxes], "int32")
        gt_score = paddle.static.data("gt_score", [-1, num_max_boxes], "float32")
        outputs = model.outputs(image, is_test=False)
        losses = model.yolo_head.losses(outputs, gt_box, gt_label, gt_score)
        loss = paddle.add_n(losses)
    fetches = {"loss": loss}
    fetches.update({f"loss_{i}": item for i, item in enumerate(losses)})
    fetches.update({f"output_{i}": item for i, item in enumerate(outputs)})
    feeds = {"image": image, "gt_box": gt_box, "gt_label": gt_label, "gt_score": gt_score}
    return BuiltProgram(main, startup, feeds, fetches)


def build_eval_program(model, image_shape=(3, 608, 608), pir=False):
    """The eval/infer program of `model` (a YOLOv3): feeds image/im_size, fetches bbox
    (multiclass NMS rows [label, score, x1, y1, x2, y2]), bbox_num and output_0..2. `pir`:
    as in `build_train_program`."""
    import paddle
    _check_model(model)
    main, startup = _new_programs(pir)
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard(), \
            _quiet_deprecations():
        image = paddle.static.data("image", _static_shape(image_shape), "float32")
        im_size = paddle.static.data("im_size", [-1, 2], "int32")
        outputs = model.outputs(image, is_test=True)
        bbox, bbox_num = model.yolo_head.detections(outputs, im_size)
    fetches = {"bbox": bbox, "bbox_num": bbox_num}
    fetches.update({f"output_{i}": item for i, item in enumerate(outputs)})
    return BuiltProgram(main, startup, {"image": image, "im_size": im_size}, fetches)


def split_detections(bbox, bbox_num):
    """Split the eval program's fetched `bbox` rows [D, 6] into one [d_i, 6] array per image
    using the fetched `bbox_num` [N]."""
    bbox = np.asarray(bbox)
    counts = np.asarray(bbox_num).reshape(-1).astype(np.int64)
    if counts.sum() == 0:
        return [np.zeros((0, 6), dtype=np.float32) for _ in counts]
    if counts.sum() != len(bbox):
        raise ValueError(f"bbox has {len(bbox)} rows but bbox_num sums to {counts.sum()}")
    return np.split(bbox, np.cumsum(counts)[:-1])
