"""The compress driver's small parts: --scale_lr, strategies from the seed's slim config,
metric_name mapping, weights paths, log lines, the NaN check."""
import math
import os
import types

import pytest

import compress as compress_cli
from slim.config import load_slim_config
from slim.engine.optimizer import LearningRate, LinearWarmup, PiecewiseDecay, scale_learning_rate
from slim.engine.train_log import TrainingStopped, TrainLog, check_finite, format_duration
from slim.errors import ConfigError, UserError
from slim.runs.restore import _local_path
from slim.strategies import UniformPruneStrategy, build_strategies, resolve_metric_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_SCHEDULE = LearningRate(0.001, [PiecewiseDecay(0.1, [55000, 62000]), LinearWarmup(1000, 0.0)])


def test_scale_lr_gives_the_seeds_two_card_schedule():
    # The seed's 2-card example (total batch 32 instead of 64) doubles milestones and warmup.
    scaled, description = scale_learning_rate(SEED_SCHEDULE, 64, 32)
    assert scaled.base_lr == pytest.approx(0.0005)
    decay, warmup = scaled.schedulers
    assert decay.milestones == [110000, 124000] and decay.gamma == 0.1
    assert (warmup.steps, warmup.start_factor) == (2000, 0.0)
    assert description == ("--scale_lr: total batch 32 vs the recipe's 64: base_lr 0.001 -> "
                           "0.0005, milestones [55000, 62000] -> [110000, 124000], warmup steps "
                           "1000 -> 2000")
    # Same images seen -> same point of the schedule, at the scaled learning rate.
    for images in (0, 32_000, 64_000 * 500, 64_000 * 1000, 64_000 * 58_000, 64_000 * 63_000):
        assert scaled.lr_at(images // 32) == pytest.approx(SEED_SCHEDULE.lr_at(images // 64) / 2)


def test_scale_lr_for_a_bigger_batch_and_explicit_values():
    schedule = LearningRate(0.01, [PiecewiseDecay(0.1, [1000, 2000], values=[0.01, 0.001, 0.0001])])
    scaled, _ = scale_learning_rate(schedule, 8, 32)
    assert scaled.base_lr == pytest.approx(0.04)
    assert scaled.schedulers[0].milestones == [250, 500]
    assert scaled.schedulers[0].values == pytest.approx([0.04, 0.004, 0.0004])


def test_scale_lr_flag():
    base = ["-s", "s.yaml", "-c", "c.yml"]
    assert compress_cli.parse_args(base).scale_lr is None
    assert compress_cli.parse_args(base + ["--scale_lr"]).scale_lr == 64
    assert compress_cli.parse_args(base + ["--scale_lr", "16"]).scale_lr == 16


def test_strategies_of_the_seeds_slim_config():
    messages = []
    slim_config = load_slim_config(os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml"))
    strategies = build_strategies(slim_config, "VOC", log=messages.append)
    assert len(strategies) == 1 and isinstance(strategies[0], UniformPruneStrategy)
    strategy = strategies[0]
    assert (strategy.name, strategy.start_epoch, strategy.target_ratio, strategy.criterion) == \
        ("uniform_pruning_strategy", 0, 0.5, "l1_norm")
    assert strategy.pruned_params.startswith("(conv2_1_sep_weights)|(conv2_2_sep_weights)")
    assert messages == ["warning: strategy 'uniform_pruning_strategy': metric_name 'acc_top1' is a "
                        "classification metric; using the detection metric of the config (VOC mAP)"]


def test_metric_name_mapping():
    messages = []
    assert resolve_metric_name("s", None, "COCO", messages.append) == "COCO"
    assert resolve_metric_name("s", "mAP", "VOC", messages.append) == "VOC"
    assert messages == []
    with pytest.raises(ConfigError, match=r"unknown metric_name 'box-ap' \(did you mean 'box_ap'\?\)"):
        resolve_metric_name("s", "box-ap", "VOC", messages.append)


@pytest.mark.parametrize("value, message", [
    ("https://example.com/MobileNetV1_pretrained.tar",
     r"pretrain_weights 'https://example.com/MobileNetV1_pretrained.tar' is a URL and nothing can "
     r"be downloaded here: download \(and extract\) it yourself, then pass the local path"),
    ("no/such/dir", r"pretrain_weights 'no/such/dir' does not exist"),
])
def test_weights_paths_must_be_local(value, message):
    with pytest.raises(UserError, match=message):
        _local_path("pretrain_weights", value)


def test_weights_archive_must_be_extracted(tmp_path):
    archive = tmp_path / "weights.tar"
    archive.write_bytes(b"")
    with pytest.raises(UserError, match=r"is an archive: extract it and pass the directory"):
        _local_path("weights", str(archive))


def test_log_line_every_log_iter_with_losses_lr_speed_and_eta():
    lines = []
    log = TrainLog(log_iter=2, smooth_window=3, total_iterations=10, images_per_iteration=16,
                   log=lines.append)
    for iteration in range(1, 4):
        log.record(0, 2, iteration, 5, iteration, {"loss": float(iteration), "loss_0": 0.5},
                   lr=0.001, seconds=2.0)
    assert lines == ["epoch 0/1 iter 2/5 (total 2) loss 1.5000 loss_0 0.5000 lr 0.001 8.0 img/s "
                     "eta 0:16"]
    log.record(0, 2, 5, 5, 5, {"loss": 7.0, "loss_0": 0.5}, lr=0.001, seconds=2.0)
    assert lines[-1].startswith("epoch 0/1 iter 5/5 (total 5) loss 3.0000")  # last of the epoch
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"


def test_logged_losses_are_the_means_over_ranks_with_one_reduction_per_line():
    """Two ranks: this one's losses 1, 2, 3 (loss_0 0.5), the other's 2 more each; the line
    shows the median of the means and the scalars get every iteration's mean."""
    lines, calls, scalars = [], [], []

    def mean_with_other_rank(values):
        calls.append(list(values))
        return [(value + (value + 2.0)) / 2 for value in values]

    class Scalars:
        def add(self, tag, value, step):
            scalars.append((tag, value, step))

    log = TrainLog(log_iter=3, smooth_window=3, total_iterations=6, images_per_iteration=4,
                   log=lines.append, scalars=Scalars(), reduce_mean=mean_with_other_rank)
    for iteration in range(1, 4):
        log.record(0, 1, iteration, 6, iteration, {"loss": float(iteration), "loss_0": 0.5},
                   lr=0.1, seconds=1.0)
    assert calls == [[1.0, 0.5, 2.0, 0.5, 3.0, 0.5]]  # one all-reduce, at the log line
    assert lines == ["epoch 0/0 iter 3/6 (total 3) loss 3.0000 loss_0 1.5000 lr 0.1 4.0 img/s "
                     "eta 0:03"]
    assert [(step, value) for tag, value, step in scalars if tag == "train/loss"] == \
        [(1, 2.0), (2, 3.0), (3, 4.0)]


def test_non_finite_loss_stops_training():
    check_finite({"loss": 1.0}, 0, 1, None)
    with pytest.raises(TrainingStopped, match=r"the loss is not finite \(loss=inf\) at epoch 3 "
                                              r"iteration 7; .*'ckpt/2' is kept"):
        check_finite({"loss": math.inf, "loss_0": 1.0}, 3, 7, "ckpt/2")
    with pytest.raises(TrainingStopped, match=r"loss_1=nan.*no checkpoint was written yet"):
        check_finite({"loss": 1.0, "loss_1": math.nan}, 0, 1, None)


def test_resumed_strategy_warns_when_the_slim_config_changed_its_options():
    """A resumed run keeps the plan its checkpoint holds; when the slim config now asks for
    another target_ratio, the run says so instead of reporting the old pruning silently."""
    slim_file = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml")
    fired, = build_strategies(load_slim_config(slim_file), "VOC", log=lambda message: None)
    fired.fired = True
    state = fired.state_dict()
    assert state["options"]["target_ratio"] == 0.5
    for target_ratio, expected in ((0.5, []), (0.3, ["target_ratio 0.5 -> 0.3"])):
        resumed, = build_strategies(load_slim_config(slim_file), "VOC", log=lambda message: None)
        resumed.target_ratio = target_ratio
        resumed.load_state_dict(state)
        messages = []
        resumed.validate(types.SimpleNamespace(log=messages.append))
        assert [part for part in expected if any(part in m for m in messages)] == expected
        assert len(messages) == len(expected) and all(
            m.startswith("warning: strategy 'uniform_pruning_strategy' pruned this run's model "
                         "before the slim config changed") for m in messages)


def test_strategy_classes_are_a_registry_with_hints():
    from slim.strategies import STRATEGY_CLASSES
    assert STRATEGY_CLASSES.get("UniformPruneStrategy") is UniformPruneStrategy
    with pytest.raises(ConfigError, match=r"unknown strategy class 'UniformPrunStrategy' \(did you "
                                          r"mean 'UniformPruneStrategy'\?\); known: DistillationStrategy, "
                                          r"SensitivePruneStrategy, UniformPruneStrategy"):
        STRATEGY_CLASSES.get("UniformPrunStrategy")
