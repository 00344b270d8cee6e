#!/usr/bin/env python
"""How the demo model learns: per-layer gradient scale at initialisation, and a learning curve.

    python bench/demo_learning.py gradients [-o KEY=VALUE ...] [--json PATH]
    python bench/demo_learning.py curve --iters 800 --eval_every 200 [-o KEY=VALUE ...]
        [--pretrain_weights DIR] [--json PATH]

`gradients` builds the train program of the demo config, runs one training
batch through it from a fresh initialisation and prints, for every conv
weight, |gradient| / |weights| (L2 norms): how far one plain SGD step at LR 1
would move it relative to its size. `curve` trains with the config's optimizer
and LR schedule (the ProgramSet and training loop of compress.py, no checkpoints) and evaluates
VOC mAP on the test split every --eval_every iterations; with
--pretrain_weights it starts from those backbone weights. Both print a table
and write JSON (default bench/results/demo_learning_<mode>.json).
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)
from slim.engine import HookBase, LoopState, Runner  # noqa: E402
from slim.engine.hooks import LRSchedule  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml")
TRAIN_FEEDS = ("image", "gt_box", "gt_label", "gt_score")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["gradients", "curve"])
    parser.add_argument("-c", "--config", default=DEMO_CONFIG)
    parser.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--iters", type=int, default=800)
    parser.add_argument("--eval_every", type=int, default=200)
    parser.add_argument("--pretrain_weights", default=None)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def gradient_ratios(cfg):
    """[(conv weight name, |w|, |g|, |g| / |w|)] for one training batch at initialisation."""
    import numpy as np
    import paddle

    from slim.config import create
    from slim.data.loader import build_train_loader
    from slim.model import build_train_program
    train = build_train_program(create(cfg["architecture"], cfg))
    with paddle.static.program_guard(train.program, train.startup):
        gradients = dict((p.name, g) for p, g in paddle.static.append_backward(train.fetches["loss"]))
    names = [name for name in gradients if name.endswith("weights")]
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    executor.run(train.startup, scope=scope)
    batch = next(iter(build_train_loader(create(cfg["train_feed"], cfg)).batches(0, 1)))
    values = executor.run(train.program, feed={k: batch[k] for k in TRAIN_FEEDS}, scope=scope,
                          fetch_list=[gradients[name] for name in names])
    rows = []
    for name, gradient in zip(names, values):
        weight_norm = float(np.linalg.norm(np.array(scope.find_var(name).get_tensor())))
        gradient_norm = float(np.linalg.norm(gradient))
        rows.append((name, weight_norm, gradient_norm, gradient_norm / weight_norm))
    return rows


def learning_curve(cfg, iterations, eval_every, pretrain_weights=None):
    """[(iteration, smoothed train loss, test VOC mAP %)] of one training run."""
    import numpy as np
    import paddle

    from slim.config import create
    from slim.data.loader import build_eval_loader, build_train_loader
    from slim.engine.distributed import DistributedEnv, use_all_cpu_threads
    from slim.engine.evaluation import evaluate, make_metric
    from slim.engine.programs import ProgramSet
    from slim.io.weights import load_weights
    use_all_cpu_threads()
    scheduler = create("LearningRate", cfg).scheduler()
    eval_feed = create(cfg["eval_feed"], cfg)
    programs = ProgramSet(create(cfg["architecture"], cfg), eval_feed.image_shape,
                          create("OptimizerBuilder", cfg), scheduler, DistributedEnv())
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    executor.run(programs.startup, scope=scope)
    if pretrain_weights:
        load_weights(scope, programs.train.program, pretrain_weights, partial=True)
    eval_loader = build_eval_loader(eval_feed)
    metric = make_metric(cfg, eval_loader)
    eval_fetches = [programs.eval.fetches["bbox"], programs.eval.fetches["bbox_num"]]

    def step(batch):
        loss, = executor.run(programs.train.program, feed={k: batch[k] for k in TRAIN_FEEDS},
                             fetch_list=[programs.train.fetches["loss"]], scope=scope)
        return {"loss": float(np.asarray(loss).reshape(-1)[0])}

    def test_map():
        return 100 * evaluate(executor, programs.eval.program, ["image", "im_size"], eval_fetches,
                              scope, eval_loader, metric, progress=False)["mAP"]

    curve = CurvePoints(eval_every, iterations, test_map)
    batches = build_train_loader(create(cfg["train_feed"], cfg)).batches(0, iterations)
    Runner(step, [LRSchedule(scheduler), curve], LoopState()).train(
        1, lambda epoch: batches, lambda epoch: iterations)
    return curve.rows


class CurvePoints(HookBase):
    """Every `eval_every` iterations (and after the last): a row (iteration, median train
    loss since the last row, test mAP % from `test_map()`), printed."""

    def __init__(self, eval_every, iterations, test_map):
        self.eval_every, self.iterations, self.test_map = eval_every, iterations, test_map
        self.losses, self.rows = [], []

    def after_iter(self, runner):
        import numpy as np
        self.losses.append(runner.outputs["loss"])
        iteration = runner.state.iteration
        if iteration % self.eval_every == 0 or iteration == self.iterations:
            self.rows.append((iteration, float(np.median(self.losses[-self.eval_every:])),
                              self.test_map()))
            print(f"iteration {iteration}: loss {self.rows[-1][1]:.2f}, test mAP "
                  f"{self.rows[-1][2]:.2f}%", flush=True)


def main(argv=None):
    args = parse_args(argv)
    import paddle

    from slim.config import load_config
    paddle.enable_static()
    cfg = load_config(args.config, args.opt)
    started = time.perf_counter()
    if args.mode == "gradients":
        rows = gradient_ratios(cfg)
        print(f"{'conv weights':40s} {'|w|':>8s} {'|g|':>10s} {'|g|/|w|':>9s}")
        for name, weight_norm, gradient_norm, ratio in rows:
            print(f"{name:40s} {weight_norm:8.3f} {gradient_norm:10.3f} {ratio:9.3f}")
        result = {"rows": [dict(zip(("name", "weight_norm", "gradient_norm", "ratio"), row))
                           for row in rows]}
    else:
        rows = learning_curve(cfg, args.iters, args.eval_every, args.pretrain_weights)
        print(f"{'iteration':>9s} {'loss':>8s} {'test mAP %':>10s}")
        for iteration, loss, mean_ap in rows:
            print(f"{iteration:9d} {loss:8.2f} {mean_ap:10.2f}")
        result = {"rows": [dict(zip(("iteration", "loss", "test_map_percent"), row))
                           for row in rows], "pretrain_weights": args.pretrain_weights}
    result.update(config=os.path.relpath(args.config, ROOT), overrides=args.opt,
                  seconds=round(time.perf_counter() - started, 1), paddle=paddle.__version__,
                  cpu_count=os.cpu_count(), machine=platform.machine())
    path = args.json or os.path.join(ROOT, "bench", "results", f"demo_learning_{args.mode}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
