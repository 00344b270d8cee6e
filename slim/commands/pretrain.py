"""Pretrain the backbone as an object classifier on crops of a detection training set.

    python -m slim pretrain -c configs/yolov3_mobilenet_v1_demo.yml --out output/demo/pretrained_backbone
        [--epochs 8] [--size 64] [--batch_size 32] [--lr 0.05] [-o KEY=VALUE ...]

The published recipe starts the detector from an ImageNet-trained backbone.
A CPU demo has none, so this does the same job on the detection data itself:
every training object is cropped (square, with a random margin and shift) and
labelled with its class, random background patches that overlap no object by
more than 30% get an extra "background" label, and the backbone of the
config's model (same parameter names and widths) plus a global-average-pool
and fully connected layer learns to tell them apart. The backbone's weights
(conv and batch norm, not the classifier layer) are written as a weights
directory that the detection config's `pretrain_weights` loads.
"""
import math
import sys
import time

import numpy as np

from slim.commands.cli import parse_command_args
from slim.engine import HookBase, LoopState, Runner
from slim.engine.hooks import LRSchedule
from slim.errors import Interrupted, UserError, exit_on_user_error, shorten, stop_on_sigterm

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


def build_classifier_program(backbone, size, num_labels):
    """Train and test programs of `backbone` + global average pool + fc over `num_labels`.

    Returns (train program, test program, startup program, loss var, logits var); the
    backbone's parameters keep the detector's names.
    """
    import paddle

    import slim.paddle_env
    main, startup = paddle.static.Program(), paddle.static.Program()
    slim.paddle_env.assert_classic_program(main)
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, size, size], "float32")
        label = paddle.static.data("label", [-1, 1], "int64")
        deepest = backbone(image, is_test=False)[-1]
        pooled = paddle.mean(deepest, axis=[2, 3])
        logits = paddle.static.nn.fc(pooled, num_labels,
                                     weight_attr=paddle.ParamAttr(name="pretrain_fc_weights"),
                                     bias_attr=paddle.ParamAttr(name="pretrain_fc_offset"))
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
    return main, main.clone(for_test=True), startup, loss, logits


def backbone_var_names(program):
    """The backbone's variables in a classifier program: its parameters (conv weights and
    batch norm scale, offset, mean and variance, which Paddle holds as parameters) without
    the classifier layer's."""
    return sorted(p.name for p in program.global_block().all_parameters()
                  if not p.name.startswith("pretrain_fc"))


class EpochCrops(HookBase):
    """Pretraining's epochs: fresh crops (`make_epoch_crops()`) in a random order before
    each, its batches of `batch_size` (the last partial one dropped), and after each the
    test crop accuracy (`test_accuracy()`) logged with the mean loss."""

    def __init__(self, make_epoch_crops, rng, batch_size, test_accuracy, epochs, log):
        self.make_epoch_crops, self.rng, self.batch_size = make_epoch_crops, rng, batch_size
        self.epochs = epochs
        self.test_accuracy, self.log = test_accuracy, log
        self.images = self.labels = self.order = None
        self.losses, self.accuracies = [], []
        self.started = time.perf_counter()

    def before_epoch(self, runner):
        self.images, self.labels = self.make_epoch_crops()
        self.order = self.rng.permutation(len(self.labels))
        self.losses = []

    def batches(self, epoch):
        """The batches of the epoch (read when the epoch starts, after before_epoch)."""
        for start in range(0, len(self.order) - self.batch_size + 1, self.batch_size):
            batch = self.order[start:start + self.batch_size]
            yield self.images[batch], self.labels[batch]

    def after_iter(self, runner):
        self.losses.append(runner.outputs["loss"])

    def after_epoch(self, runner):
        self.accuracies.append(self.test_accuracy())
        self.log(f"pretrain epoch {runner.epoch}/{self.epochs - 1}: "
                 f"{len(self.labels)} crops, loss {np.mean(self.losses):.3f}, "
                 f"test crop accuracy {self.accuracies[-1]:.3f}, "
                 f"{time.perf_counter() - self.started:.0f} s")


def pretrain_backbone(cfg, out, epochs=8, size=64, batch_size=32, lr=0.05, seed=0, log=print,
                      inputs=()):
    """Train the config's backbone on crops of its training set; write its weights to `out`.

    `out` is checked first (`check_weights_target`: absent, empty or a weights dir the tool
    wrote; not one of the run's inputs, e.g. the dataset dir, nor `inputs`), so a bad place
    fails before training. Returns the test-split crop accuracy of each epoch.
    """
    import paddle

    from slim.config import create
    from slim.data.loader import load_feed_records
    from slim.engine.distributed import use_all_cpu_threads
    from slim.io.run_inputs import config_inputs
    from slim.io.weights import check_weights_target, save_weights
    check_weights_target(out, what="--out",
                         inputs=config_inputs(cfg, ("train_feed", "eval_feed"), *inputs))
    use_all_cpu_threads()
    num_classes = int(cfg["num_classes"])
    train_records = load_feed_records(create(cfg["train_feed"], cfg), for_training=True)
    test_records = load_feed_records(create(cfg["eval_feed"], cfg), for_training=False)
    model = create(cfg["architecture"], cfg)
    train, test, startup, loss, logits = build_classifier_program(model.backbone, size,
                                                                  num_classes + 1)
    rng = np.random.default_rng(seed)
    train_images = decode_images(train_records)
    test_images, test_labels = make_crops(test_records, decode_images(test_records), num_classes,
                                          size, np.random.default_rng([seed, 1]),
                                          backgrounds_per_image=1)
    # crops per epoch: every object plus up to two background patches per image
    crops_per_epoch = sum(len(r["gt_bbox"]) for r in train_records) + 2 * len(train_records)
    steps_per_epoch = max(1, crops_per_epoch // batch_size)
    with paddle.static.program_guard(train, startup):
        scheduler = paddle.optimizer.lr.CosineAnnealingDecay(lr, epochs * steps_per_epoch)
        paddle.optimizer.Momentum(scheduler, 0.9,
                                  weight_decay=paddle.regularizer.L2Decay(5e-5)).minimize(loss)
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    executor.run(startup, scope=scope)

    def step(batch):
        value, = executor.run(train, feed={"image": batch[0], "label": batch[1][:, None]},
                              fetch_list=[loss], scope=scope)
        return {"loss": float(np.asarray(value).reshape(-1)[0])}

    def test_accuracy():
        predictions = np.concatenate([
            np.argmax(executor.run(test, feed={"image": test_images[i:i + 256],
                                               "label": test_labels[i:i + 256, None]},
                                   fetch_list=[logits], scope=scope)[0], axis=1)
            for i in range(0, len(test_labels), 256)])
        return float(np.mean(predictions == test_labels))

    crops = EpochCrops(lambda: make_crops(train_records, train_images, num_classes, size, rng),
                       rng, batch_size, test_accuracy, epochs, log)
    Runner(step, [crops, LRSchedule(scheduler)], LoopState()).train(
        epochs, crops.batches, lambda epoch: None)
    accuracies = crops.accuracies
    save_weights(scope, train, out, var_names=backbone_var_names(train), what="--out")
    log(f"backbone weights -> {out} (load them with pretrain_weights: {out})")
    return accuracies


def add_arguments(parser):
    """pretrain's flags (`python -m slim pretrain`)."""
    parser.add_argument("-c", "--config", required=True, help="detection config")
    parser.add_argument("--out", required=True, help="weights directory to write")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="Momentum LR (cosine decay)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                        help="detection config overrides")


def parse_args(argv=None):
    return parse_command_args(__doc__, add_arguments, argv, prog="python -m slim pretrain")


@exit_on_user_error
def main(argv=None):
    """`python -m slim pretrain ARGS` in-process; exit code."""
    return run(parse_args(argv))


def run(args):
    """Pretrain as `args` say; 0."""
    import paddle

    from slim.config import load_config
    stop_on_sigterm()  # again: paddle's import installed its own handler
    if args.epochs < 1 or args.size < 32 or args.size % 32 or args.batch_size < 2:
        raise UserError("--epochs must be >= 1, --size a multiple of 32 (>= 32), "
                        "--batch_size >= 2")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise UserError(f"--lr {args.lr} must be a finite number > 0")
    paddle.enable_static()
    cfg = load_config(args.config, args.opt)
    try:
        pretrain_backbone(cfg, args.out, args.epochs, args.size, args.batch_size, args.lr,
                          log=lambda message: print(message, flush=True), inputs=[args.config])
    except KeyboardInterrupt:
        raise Interrupted(f"pretraining stopped before its weights were written; --out "
                          f"'{shorten(args.out)}' is unchanged") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
