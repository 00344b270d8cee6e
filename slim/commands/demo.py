"""`make demo`: the main job end to end on the embedded demo dataset, then the seed's table.

    python -m slim demo [--out output/demo] [--pretrain_epochs 10] [--baseline_epochs 12] [-o KEY=VALUE ...]

Steps, each run as the command a user would type (printed before it runs):

1. `python -m slim.data.demo --out dataset/demo` (skipped when up to date);
1b. `python -m slim pretrain`: the backbone pretrained as a classifier on crops of the
   training objects for `--pretrain_epochs` epochs (the recipe's ImageNet backbone, which a
   CPU demo has not got), written to `<out>/pretrained_backbone` (0 epochs: skipped);
2. the baseline: `train.py` (plain training) from those `pretrain_weights` for
   `--baseline_epochs` x max_iters iterations, a checkpoint every max_iters, written to
   `<out>/baseline/`; its final parameters are copied to the detection config's `weights`
   path (output/demo/model_final);
3. the seed's command: `compress.py -s configs/yolov3_mobilenet_v1_demo_slim.yaml
   -c configs/yolov3_mobilenet_v1_demo.yml` (-50% FLOPs from those weights, then fine-tuning);
4. `eval.py` on both final eval models;
5. `infer.py` with both models on a few test images (drawn into `<out>/infer_*`);
6. Paddle Inference latency of both `__model__.infer` files, measured side by side;
7. the table (FLOPs, Box AP, model size, Paddle Inference ms/image), printed and written to
   `<out>/results.md` and `<out>/results.json`.

`-o` items go to train.py and compress.py (e.g. `-o max_iters=5` for a quick smoke run: the
baseline then trains `--baseline_epochs` x 5 iterations).
"""
import dataclasses
import json
import os
import shutil
import sys
import time

from slim.commands.cli import add_override_argument, parse_command_args
from slim.errors import UserError, exit_on_user_error
from slim.io.output_places import WrittenFiles, check_output_dir, check_replaceable_dir
from slim.workflow.latency import LATENCY_ROUNDS, latency_inputs, measure_latency
from slim.workflow.models import last_checkpoint, write_model_final
from slim.workflow.places import fresh_owned_dir, is_ours
from slim.workflow.schedule import schedule_override
from slim.workflow.steps import python_command as _python
from slim.workflow.steps import run_step

DETECTION_CONFIG = "configs/yolov3_mobilenet_v1_demo.yml"
SLIM_CONFIG = "configs/yolov3_mobilenet_v1_demo_slim.yaml"
DATASET_DIR = "dataset/demo"
INFER_IMAGES = 4
# The demo model's scores are low (the objectness prior and a short run): its correct boxes
# mostly score 0.05-0.3, so infer.py's default threshold of 0.5 would draw nothing.
DRAW_THRESHOLD = 0.1
LATENCY_IMAGES = 20
RESULTS_MARKDOWN = "results.md"
RESULTS_JSON = "results.json"
RESULT_FILES = (RESULTS_MARKDOWN, RESULTS_JSON)

def add_arguments(parser):
    """demo's flags (`python -m slim demo`)."""
    parser.add_argument("--out", default="output/demo", help="where every result goes")
    parser.add_argument("--pretrain_epochs", type=int, default=10,
                        help="epochs of backbone pretraining on object crops (0: train from scratch)")
    parser.add_argument("--baseline_epochs", type=int, default=12,
                        help="epochs (of max_iters iterations) of baseline training")
    add_override_argument(parser, "overrides for train.py and compress.py")


def parse_args(argv=None):
    return parse_command_args(__doc__, add_arguments, argv, prog="python -m slim demo")


@dataclasses.dataclass
class DemoPlaces:
    """Everything the demo writes. `owned_dirs` are made whole by the demo (marked with
    OWNER_MARKER, emptied at the start of a run); `weights` are weights directories
    written by save_weights; `out` also gets RESULT_FILES."""
    out: str
    dataset: str
    owned_dirs: dict
    weights: dict

    def __getitem__(self, name):
        return self.owned_dirs.get(name) or self.weights[name]


def demo_places(out, cfg, slim_cfg, with_pretraining):
    """The demo's output places under `out` (and the config's weights and the slim
    config's checkpoint_path)."""
    owned = {name: os.path.join(out, name) for name in
             ("baseline", "pruned", "eval_baseline", "eval_pruned", "infer_images",
              "infer_baseline", "infer_pruned")}
    owned["pruned_checkpoints"] = slim_cfg.compressor.checkpoint_path
    weights = {"model_final": cfg.get("weights") or os.path.join(out, "model_final")}
    if with_pretraining:
        weights["pretrained_backbone"] = os.path.join(out, "pretrained_backbone")
    return DemoPlaces(out, DATASET_DIR, owned, weights)


def check_demo_places(places, inputs):
    """Before any work: every place the demo writes is writable and free (absent, empty or
    the demo's own), none is one of `inputs`; a one-line OutputPlaceError otherwise."""
    from slim.data.demo import check_demo_out
    from slim.io.weights import check_weights_target
    check_output_dir(places.out, "--out", inputs)
    WrittenFiles(places.out).check(RESULT_FILES, "--out", inputs)
    check_demo_out(places.dataset)
    for name, path in places.owned_dirs.items():
        check_replaceable_dir(path, f"the demo's {name} directory", inputs, is_ours=is_ours)
    for name, path in places.weights.items():
        check_weights_target(path, what=f"the demo's {name} weights", inputs=inputs)


def baseline_schedule(cfg, epochs, warmup_steps=50):
    """The `-o` item giving the baseline run its own LR schedule: warm-up, then x0.1 at 80%
    and 93% of its `epochs` x max_iters iterations. (The config's schedule is the pruned
    run's: the seed's command line fine-tunes for the slim config's few epochs.)"""
    return schedule_override(epochs * int(cfg["max_iters"]), (0.8, 0.93), warmup_steps)


def baseline_train_command(cfg, epochs, checkpoint_path, output_eval, pretrained=None, opt=()):
    """The train.py command line of the baseline: `epochs` x the config's max_iters
    iterations with a checkpoint every max_iters (one per epoch), its own LR schedule
    (`baseline_schedule`), from `pretrained` backbone weights if given; the user's `opt`
    apply, but for max_iters and snapshot_iter, which they set per epoch."""
    per_epoch = int(cfg["max_iters"])
    overrides = ["weights=null", baseline_schedule(cfg, epochs)]
    if pretrained:
        overrides.append(f"pretrain_weights={pretrained}")
    overrides += [*opt, f"max_iters={epochs * per_epoch}", f"snapshot_iter={per_epoch}"]
    return _python("train.py", "-c", DETECTION_CONFIG, "-o", *overrides,
                   "--checkpoint_path", checkpoint_path, "--output_eval", output_eval)


def results_table(rows):
    """The seed's table as markdown lines from rows of
    {name, flops, flops_ratio, box_ap, size_mb, latency_ms}."""
    lines = ["| model | FLOPs | Box AP (VOC 11-point) | model size | Paddle Inference ms/image |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {100 * row['flops_ratio']:.1f}% "
                     f"({row['flops'] / 1e9:.3f} G) | {100 * row['box_ap']:.2f} | "
                     f"{row['size_mb']:.1f} MB | {row['latency_ms']:.1f} |")
    return lines


def main(argv=None):
    """The demo with the flags in `argv` (uncaught UserErrors: see `cli`)."""
    return run(parse_args(argv))


def run(args):
    """Every step of the demo as `args` say; 0 (a failed step raises)."""
    started = time.perf_counter()
    for path in (DETECTION_CONFIG, SLIM_CONFIG):
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: run the demo from the project root (make demo)")
    from slim.config import load_config, load_slim_config
    cfg = load_config(DETECTION_CONFIG, args.opt)
    opt_items = ["-o", *args.opt] if args.opt else []  # the user's -o, passed on to each step
    slim_cfg = load_slim_config(SLIM_CONFIG)
    places = demo_places(args.out, cfg, slim_cfg, args.pretrain_epochs > 0)
    check_demo_places(places, [DATASET_DIR, DETECTION_CONFIG, SLIM_CONFIG])
    out = args.out
    timings = {}

    timings["dataset"] = run_step("demo dataset", _python("-m", "slim.data.demo", "--out", DATASET_DIR))

    baseline_dir = fresh_owned_dir(places["baseline"])
    baseline_checkpoints = os.path.join(baseline_dir, "checkpoints")
    pretrained = None
    if args.pretrain_epochs > 0:
        pretrained = places["pretrained_backbone"]
        timings["pretrain"] = run_step(
            f"pretrain the backbone: {args.pretrain_epochs} epochs on object crops",
            _python("-m", "slim", "pretrain", "-c", DETECTION_CONFIG, "--out", pretrained,
                    "--epochs", str(args.pretrain_epochs), *opt_items))
    timings["baseline"] = run_step(
        f"baseline: {args.baseline_epochs} epochs of plain training",
        baseline_train_command(cfg, args.baseline_epochs, baseline_checkpoints, baseline_dir,
                               pretrained, args.opt), os.path.join(baseline_dir, "train.log"))
    baseline = last_checkpoint(baseline_checkpoints)
    weights_path = places["model_final"]
    write_model_final(baseline, DETECTION_CONFIG, weights_path, args.opt)
    print(f"baseline parameters of '{baseline.path}' -> {weights_path} (the config's weights)")

    pruned_dir = fresh_owned_dir(places["pruned"])
    pruned_checkpoints = fresh_owned_dir(places["pruned_checkpoints"])
    extra = opt_items
    if cfg.get("weights") is None:
        extra = ["-o", f"weights={weights_path}", *args.opt]
    timings["compress"] = run_step(
        "compress: prune -50% FLOPs, then fine-tune (the seed's command line)",
        _python("compress.py", "-s", SLIM_CONFIG, "-c", DETECTION_CONFIG, *extra,
                "--output_eval", pruned_dir), os.path.join(pruned_dir, "compress.log"))
    pruned = last_checkpoint(pruned_checkpoints)

    models = {"baseline": os.path.join(baseline.path, "eval_model"),
              "-50% FLOPs": os.path.join(pruned.path, "eval_model")}
    scores = {}
    for name, model_dir in models.items():
        eval_out = fresh_owned_dir(places["eval_" + _short_name(name)])
        timings["eval " + name] = run_step(
            f"eval.py: {name}", _python("eval.py", "-m", model_dir, "--model_name", "__model__",
                                        "--params_name", "__params__", "-c", DETECTION_CONFIG,
                                        "--output_eval", eval_out))
        with open(os.path.join(eval_out, "eval_result.json")) as handle:
            scores[name] = json.load(handle)

    infer_images = fresh_owned_dir(places["infer_images"])
    with open(os.path.join(DATASET_DIR, "test.txt")) as handle:
        for line in list(handle)[:INFER_IMAGES]:
            shutil.copy(os.path.join(DATASET_DIR, line.split()[0]), infer_images)
    for name, model_dir in models.items():
        infer_out = fresh_owned_dir(places["infer_" + _short_name(name)])
        timings["infer " + name] = run_step(
            f"infer.py: {name}", _python("infer.py", "--model_path", model_dir, "--model_name",
                                         "__model__.infer", "--params_name", "__params__", "-c",
                                         DETECTION_CONFIG, "--infer_dir", infer_images,
                                         "--output_dir", infer_out,
                                         "--draw_threshold", str(DRAW_THRESHOLD)))

    print("\n=== Paddle Inference latency (batch 1, interleaved, median)", flush=True)
    latency, threads = measure_latency(models, latency_inputs(cfg, LATENCY_IMAGES))
    flops = {"baseline": pruned.state.extra.get("flops_unpruned"),
             "-50% FLOPs": pruned.state.extra.get("flops")}
    rows = []
    for name, model_dir in models.items():
        rows.append({"name": name, "flops": flops[name],
                     "flops_ratio": flops[name] / flops["baseline"],
                     "box_ap": scores[name]["mAP"],
                     "size_mb": os.path.getsize(os.path.join(model_dir, "__params__")) / 2 ** 20,
                     "latency_ms": latency[name], "model_dir": model_dir})
    table = results_table(rows)
    total = time.perf_counter() - started
    note = (f"Demo dataset {DATASET_DIR}, {DETECTION_CONFIG} + {SLIM_CONFIG}; Box AP on the "
            f"{scores['baseline'].get('num_images')} test images; latency over "
            f"{LATENCY_IMAGES} images x {LATENCY_ROUNDS} rounds, {threads} CPU threads; "
            f"demo total {total / 60:.1f} min.")
    results = WrittenFiles(out)
    markdown = results.write_bytes(RESULTS_MARKDOWN, "\n".join(table + ["", note, ""]).encode("utf-8"))
    summary = results.write_json(RESULTS_JSON, {"rows": rows, "timings_s": timings, "total_s": total,
                                                "latency_threads": threads})
    print("\n" + "\n".join(table))
    print("\n" + note)
    print(f"wrote {markdown} and {summary}")
    return 0


def _short_name(model_name):
    """'baseline' or 'pruned': the directory suffix of a model of `models`."""
    return "baseline" if model_name == "baseline" else "pruned"


@exit_on_user_error
def cli(argv=None):
    """`python -m slim demo ARGS` in-process: one-line errors, exit codes."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
