"""Backbone pretraining on object crops (what `python -m slim pretrain` runs; the demo,
bench/accuracy.py and own-data runs use it in place of an ImageNet backbone): fresh crops
every epoch (`slim.data.crops`), the classifier program (`slim.model.classifier`), the
training loop (`slim.engine.Runner` with an `EpochCrops` hook and a cosine LR), the
backbone's weights written as a weights directory for `pretrain_weights`.

Imports: engine, model, data, io, config, errors.
"""
import time

import numpy as np

from slim.data.crops import decode_images, make_crops
from slim.engine import HookBase, LoopState, Runner
from slim.engine.hooks import LRSchedule
from slim.model.classifier import backbone_var_names, build_classifier_program


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
