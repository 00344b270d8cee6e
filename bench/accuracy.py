#!/usr/bin/env python
"""Converged accuracy benchmark of the pruning methods on the demo dataset (issue #11).

    python bench/accuracy.py [--methods seed,auto] [--recipe full|long] [--quick] [--threads N]
                             [--jobs N] [--out output/accuracy]

Steps, each the command a user would type (run as a subprocess, its output in a log file
under --out; a progress line with elapsed time and ETA per step):

1. the dataset: `python -m slim.data.demo` (skipped when up to date);
2. the backbone pretrained on object crops: `python -m slim pretrain`;
3. the baseline: `train.py --eval` for the recipe's iterations, with decays at 60% and 80%
   of them, so the last fifth runs at the final LR and shows whether it has converged
   (its mAP gained less than CONVERGED_GAIN points over that fifth);
   2 and 3 are cached under `<out>/cache/<hash>/`, the hash of everything they depend on
   (config file, recipe, Paddle version): a rerun skips them;
4. the sensitivities, when a method searches ratios by them: `python -m slim sensitivity`
   on the baseline into the cache (`--jobs` worker processes), once for all its methods;
5. the control: the baseline trained on for the fine-tuning budget with no pruning
   (`compress.py` with a slim config that has no strategy), once per seed;
6. each method of --methods: `compress.py -s <its slim config>` from the baseline, for the
   same budget, once per seed (`--jobs` runs at a time, each on --threads threads);
7. the table (FLOPs, params, size, mAP mean and spread over seeds, drop against the
   control), printed and written to `<out>/accuracy.json` (and, for a recipe other than
   --quick, to bench/results/accuracy.json or accuracy_<recipe>.json).

Recipes: `full` fine-tunes 3 epochs (750 iterations), `long` 6 epochs from the same cached
baseline: whether a method's drop shrinks with the fine-tuning budget. Their runs live in
`<out>/runs/` and `<out>/runs_long/`.

A method is one entry of METHODS (name -> slim config). --quick runs every step on a tiny
dataset for a few iterations: a smoke run of minutes whose numbers mean nothing.
"""
import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from slim.errors import UserError, exit_on_user_error  # noqa: E402
from slim.workflow.schedule import schedule_override  # noqa: E402  (the demo's too)

DETECTION_CONFIG = "configs/yolov3_mobilenet_v1_accuracy.yml"
CONTROL = "control"
BASELINE = "baseline"
BENCH_MARKER = ".accuracy-bench"  # in every directory this bench makes (and may empty)
RUN_RESULT = "run.json"  # in a fine-tuning run's dir: its key (slim config + command), result
CONVERGED_GAIN = 1.0  # mAP points: the baseline's most over the last fifth of its schedule
CONVERGED_FRACTION = 0.2
ETA_PRIOR_SECONDS = 120.0
FEEDS = ("YoloTrainFeed", "YoloEvalFeed", "YoloTestFeed")


@dataclasses.dataclass(frozen=True)
class Method:
    """A pruning method: the slim config whose strategies compress.py runs. `teacher`
    CONTROL: its distillation strategy's teacher is the control run of the same seed (the
    unpruned model trained on for the same budget) instead of the model at pruning time.
    `options` ({strategy class: {key: value}}) replace the slim config's."""
    slim_config: str
    description: str
    teacher: str = None
    options: dict = dataclasses.field(default_factory=dict)


METHODS = {
    "seed": Method("configs/yolov3_mobilenet_v1_demo_slim.yaml",
                   "uniform l1, -50% FLOPs over the seed's 24 params"),
    "auto": Method("configs/yolov3_mobilenet_v1_auto_slim.yaml",
                   "uniform l1, -50% FLOPs over every prunable conv"),
    "sensitive": Method("configs/yolov3_mobilenet_v1_sensitive_slim.yaml",
                        "sensitivity-searched per-group ratios, -50% FLOPs over every prunable "
                        "conv (sensitivities measured once per baseline, cached)"),
    "auto_distill": Method("configs/yolov3_mobilenet_v1_auto_distill_slim.yaml",
                           "auto with distillation from the unpruned model while fine-tuning"),
    "sensitive_distill": Method("configs/yolov3_mobilenet_v1_sensitive_distill_slim.yaml",
                                "sensitive with distillation from the unpruned model"),
    "sensitive_distill_control": Method(
        "configs/yolov3_mobilenet_v1_sensitive_distill_slim.yaml",
        "sensitive with distillation from the control of the same seed (a teacher trained "
        "on for the fine-tuning budget; the student's own budget is the same)", teacher=CONTROL),
    "sensitive_distill_control_w3": Method(
        "configs/yolov3_mobilenet_v1_sensitive_distill_slim.yaml",
        "sensitive_distill_control with distillation loss weight 3", teacher=CONTROL,
        options={"DistillationStrategy": {"distillation_loss_weight": 3.0}}),
    "sensitive2_distill_control": Method(
        "configs/yolov3_mobilenet_v1_sensitive_distill_slim.yaml",
        "sensitive_distill_control in 2 steps: -25% FLOPs at epoch 0, -50% at epoch 1",
        teacher=CONTROL, options={"SensitivePruneStrategy": {"num_steps": 2}}),
    "auto_distill_control": Method(
        "configs/yolov3_mobilenet_v1_auto_distill_slim.yaml",
        "auto with distillation from the control of the same seed", teacher=CONTROL),
    "sensitive_70_distill_control": Method(
        "configs/yolov3_mobilenet_v1_sensitive70_distill_slim.yaml",
        "sensitive_70 with distillation from the control of the same seed", teacher=CONTROL),
    "sensitive2_70_distill_control": Method(
        "configs/yolov3_mobilenet_v1_sensitive70_distill_slim.yaml",
        "sensitive_70_distill_control in 2 steps: -35% FLOPs at epoch 0, -70% at epoch 1",
        teacher=CONTROL, options={"SensitivePruneStrategy": {"num_steps": 2}}),
    "sensitive_70": Method("configs/yolov3_mobilenet_v1_sensitive70_slim.yaml",
                           "sensitivity-searched per-group ratios, -70% FLOPs"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything the dataset, the pretraining, the baseline and the fine-tuning runs
    depend on besides the config file. `epoch_iterations` is compress.py's epoch
    (max_iters); `seconds_per_iteration` and `pretrain_seconds` only feed the ETA."""
    name: str
    dataset_dir: str
    train_images: int
    test_images: int
    dataset_seed: int
    pretrain_epochs: int
    baseline_iterations: int
    snapshot_iter: int
    epoch_iterations: int
    finetune_epochs: int
    seeds: tuple
    decay_fractions: tuple = (0.6, 0.8)
    warmup_steps: int = 50
    # measured on 1 thread (the FULL recipe's first run, the machine shared with other jobs):
    # 0.7-0.95 s per training iteration, 20-31 s per evaluation of 1000 test images,
    # 92-94 s per pretraining epoch of the 2000 training images
    seconds_per_iteration: float = 0.8
    seconds_per_eval: float = 66.0  # 3000 test images
    pretrain_seconds: float = 280.0

    @property
    def finetune_iterations(self):
        return self.finetune_epochs * self.epoch_iterations

    @property
    def runs_dir(self):
        """The directory under --out of this recipe's fine-tuning runs."""
        return "runs" if self.name in ("full", "quick") else f"runs_{self.name}"

    @property
    def results_json(self):
        """Where the recipe's table goes in the repo (None: --quick, whose numbers mean nothing)."""
        if self.name == "quick":
            return None
        suffix = "" if self.name == "full" else f"_{self.name}"
        return os.path.join("bench", "results", f"accuracy{suffix}.json")


# The full recipe, measured in bench/results/accuracy_baseline_curve.json: the baseline reached
# 56.1% mAP (1000 test images) after 3000 iterations, 0.3 points over its last fifth. The test
# split: mAP of that model on disjoint 1000-image test sets (generator seeds 0-3) had a standard
# deviation of 1.15 points (1.74 on 500-image sets), so 3000 images give about 0.66. Evaluations
# every 600 iterations fall on the second decay (2400 = 80%), where the last fifth starts.
FULL = Recipe(name="full", dataset_dir="dataset/accuracy", train_images=2000, test_images=3000,
              dataset_seed=0, pretrain_epochs=3, baseline_iterations=3000, snapshot_iter=600,
              epoch_iterations=250, finetune_epochs=3, seeds=(0, 1))
# The same baseline (same cache key), twice the fine-tuning budget.
LONG = dataclasses.replace(FULL, name="long", finetune_epochs=6)
QUICK = Recipe(name="quick", dataset_dir="dataset/accuracy_quick", train_images=48,
               test_images=24, dataset_seed=0, pretrain_epochs=1, baseline_iterations=20,
               snapshot_iter=10, epoch_iterations=5, finetune_epochs=2, seeds=(0, 1), warmup_steps=2,
               seconds_per_eval=1.0, pretrain_seconds=5.0)
RECIPES = {recipe.name: recipe for recipe in (FULL, LONG)}
SENSITIVITY_SECONDS = 600.0  # one measurement of the sensitivities, one worker (for the ETA)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods, of: {', '.join(METHODS)}")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="full",
                        help="fine-tuning budget: full (3 epochs) or long (6 epochs), both "
                             "from the same cached baseline")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of minutes on a tiny dataset (its numbers mean nothing)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of every step (default: OMP_NUM_THREADS or all cores); "
                             "1 also loads data in the main process (num_workers=0)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="fine-tuning runs (and sensitivity workers) at a time; with "
                             "--threads 1, one per core")
    parser.add_argument("--out", default=None,
                        help="where runs and logs go (default: output/accuracy[_quick])")
    return parser.parse_args(argv)


def selected_methods(text):
    """The METHODS entries named in the comma-separated `text`, in its order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise UserError(f"--methods '{text}': unknown method(s) {', '.join(unknown) or '(none)'}; "
                        f"valid: {', '.join(METHODS)}")
    return {name: METHODS[name] for name in names}


def config_hash(*parts):
    """Hex SHA-256 of `parts` as canonical JSON (dataclasses as dicts, tuples as lists)."""
    def plain(value):
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    text = json.dumps([plain(part) for part in parts], sort_keys=True, default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def baseline_key(config_text, recipe, overrides, paddle_version):
    """The cache key of the pretraining and the baseline: the config file's text, the
    recipe fields they depend on, the overrides, the Paddle version."""
    fields = {name: getattr(recipe, name) for name in (
        "dataset_dir", "train_images", "test_images", "dataset_seed", "pretrain_epochs",
        "baseline_iterations", "snapshot_iter", "decay_fractions", "warmup_steps")}
    return config_hash(config_text, fields, list(overrides), paddle_version)


def feed_overrides(recipe, threads):
    """`-o` items every step gets: the recipe's dataset, and one data process per step on
    one thread (worker processes would use other cores)."""
    items = [f"{feed}.dataset.dataset_dir={recipe.dataset_dir}" for feed in FEEDS]
    if threads == 1:
        items += [f"{feed}.num_workers=0" for feed in ("YoloTrainFeed", "YoloEvalFeed")]
    return items


def map_curve(summary, snapshot_iter):
    """[(iteration, mAP %)] of a train.py summary's history (epoch e ends at iteration
    (e + 1) x snapshot_iter)."""
    return [((entry["epoch"] + 1) * snapshot_iter, 100.0 * entry["mAP"])
            for entry in summary["history"]]


def last_fifth_gain(curve, fraction=CONVERGED_FRACTION):
    """mAP points gained from the last evaluation at or before (1 - fraction) of the
    schedule to the final one; None when no evaluation is that early."""
    end = curve[-1][0]
    earlier = [value for iteration, value in curve if iteration <= (1 - fraction) * end]
    return curve[-1][1] - earlier[-1] if earlier else None


def spread(values):
    """(mean, max - min) of `values`."""
    return sum(values) / len(values), max(values) - min(values)


def eta_seconds(done_expected, done_actual, remaining_expected, prior=ETA_PRIOR_SECONDS):
    """Seconds left: the remaining expected seconds, scaled by how the finished steps
    compared with what was expected of them (with `prior` seconds of 'as expected' mixed
    in, so that a few seconds' step does not swing the estimate)."""
    return remaining_expected * (done_actual + prior) / (done_expected + prior)


def method_rows(runs, baseline):
    """The table's rows: the baseline, then one per method of `runs` ({method: [run
    summaries, one per seed]}), the control first; mAP in points, drop against the
    control's mean."""
    rows = [dict(baseline, method=BASELINE, seeds=1, map_spread=0.0, drop=None)]
    control_mean = spread([run["map"] for run in runs[CONTROL]])[0] if CONTROL in runs else None
    for method, seed_runs in runs.items():
        mean, width = spread([run["map"] for run in seed_runs])
        first = seed_runs[0]
        rows.append({"method": method, "flops": first["flops"], "params": first["params"],
                     "size_mb": first["size_mb"], "map": mean, "map_spread": width,
                     "map_per_seed": [run["map"] for run in seed_runs], "seeds": len(seed_runs),
                     "drop": None if control_mean is None else control_mean - mean})
    return rows


def results_table(rows):
    """Markdown lines of `rows` (see method_rows)."""
    base_flops = rows[0]["flops"]
    lines = ["| method | FLOPs | params | size | mAP (VOC 11-point) | spread over seeds | "
             "drop vs control |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        drop = "" if row["drop"] is None else f"{row['drop']:+.2f}"
        spread_text = "" if row["seeds"] < 2 else f"{row['map_spread']:.2f} ({row['seeds']} seeds)"
        lines.append(f"| {row['method']} | {100 * row['flops'] / base_flops:.1f}% "
                     f"({row['flops'] / 1e6:.1f} M) | {row['params'] / 1e6:.3f} M | "
                     f"{row['size_mb']:.2f} MB | {row['map']:.2f} | {spread_text} | {drop} |")
    return lines


class Progress:
    """Progress lines: step i/n, elapsed, ETA from the expected seconds of each step
    (divided by `parallel`, the steps that run at a time). Steps may begin and end from
    several threads."""

    def __init__(self, expected, parallel=1):
        self.expected = dict(expected)  # step name -> expected seconds
        self.parallel = parallel
        self.started = time.perf_counter()
        self.done_expected = 0.0
        self.done_actual = 0.0
        self.done = []
        self.lock = threading.Lock()

    def begin(self, name):
        with self.lock:
            remaining = sum(seconds for step, seconds in self.expected.items()
                            if step not in self.done)
            eta = eta_seconds(self.done_expected, self.done_actual, remaining) / self.parallel
            print(f"[{len(self.done) + 1}/{len(self.expected)}] {name} | elapsed "
                  f"{_minutes(time.perf_counter() - self.started)}, ETA {_minutes(eta)}",
                  flush=True)
        return time.perf_counter()

    def end(self, name, began, skipped=False):
        seconds = time.perf_counter() - began
        with self.lock:
            if not skipped:
                self.done_expected += self.expected[name]
                self.done_actual += seconds
            self.done.append(name)
            print(f"    {name}: {'cached' if skipped else _minutes(seconds)}", flush=True)
        return seconds

    def note(self, text):
        """Print `text` as one line (runs at a time print through the same lock)."""
        with self.lock:
            print(f"    {text}", flush=True)


def _minutes(seconds):
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class StepProcesses:
    """The step subprocesses running now (one per job): an interrupted bench stops them
    rather than waiting for them, and starts no more."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = set()
        self._stopped = False

    def run(self, command, log, env):
        """Run `command` with its output in the open file `log`; its exit code."""
        with self._lock:
            if self._stopped:
                raise UserError(f"bench stopped before: {' '.join(command[1:4])} ...")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       cwd=ROOT)
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self):
        """Terminate the running steps; later `run` calls raise."""
        with self._lock:
            self._stopped = True
            for process in self._running:
                process.terminate()


def run_logged(command, log_path, env, processes=None):
    """Run `command` (through `processes`, a StepProcesses, if given) with its output in
    `log_path`; a UserError naming the log on failure."""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        returncode = (processes or StepProcesses()).run(command, log, env)
    if returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = log.read().strip().splitlines()[-1:]
        raise UserError(f"step failed (exit {returncode}): {' '.join(command[1:4])} ...; "
                        f"last line: {tail[0] if tail else '(none)'}; log: {log_path}")


def fresh_dir(path):
    """`path` as a new empty directory marked as the bench's; a UserError if it exists and
    is not (nothing of anyone else's is removed)."""
    if os.path.lexists(path):
        if not os.path.isfile(os.path.join(path, BENCH_MARKER)):
            raise UserError(f"'{path}' exists and was not made by bench/accuracy.py (no "
                            f"{BENCH_MARKER}); move it away or choose another --out")
        shutil.rmtree(path)
    os.makedirs(path)
    open(os.path.join(path, BENCH_MARKER), "w").close()
    return path


def check_places(out, recipe):
    """Before any work: --out can be a directory and the results JSON can be written."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out '{out}' exists and is not a directory: choose another --out")
    if recipe.results_json is not None:
        results_dir = os.path.dirname(recipe.results_json)
        if not os.access(results_dir, os.W_OK):
            raise UserError(f"'{results_dir}' is not writable: {recipe.results_json} could not "
                            "be written")


def _python(*arguments):
    return [sys.executable, *arguments]


def pretrain_command():
    """The backbone pretraining's command line (slim.runs.pretrain behind it)."""
    return _python("-m", "slim", "pretrain")


@dataclasses.dataclass
class Bench:
    """One bench run: where it writes, the environment of its steps, its progress."""
    recipe: Recipe
    out: str
    env: dict
    overrides: list
    progress: Progress
    cache_dir: str = None  # the baseline's cache (pretraining, baseline, sensitivities)
    processes: StepProcesses = dataclasses.field(default_factory=StepProcesses)

    def step(self, name, command, log_name):
        began = self.progress.begin(name)
        run_logged(command, os.path.join(self.out, "logs", log_name), self.env, self.processes)
        return self.progress.end(name, began)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path, value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
    os.replace(temporary, path)
    return path


def make_dataset(bench):
    recipe = bench.recipe
    bench.step("dataset", _python("-m", "slim.data.demo", "--out", recipe.dataset_dir,
                                  "--train", str(recipe.train_images), "--test",
                                  str(recipe.test_images), "--seed", str(recipe.dataset_seed)),
               "dataset.log")


def cached_baseline(bench, cache_dir):
    """Pretraining and baseline in `cache_dir`, skipped when its baseline.json exists;
    the baseline's record (curve, mAP, convergence, model_final, FLOPs, params, size)."""
    record_path = os.path.join(cache_dir, "baseline.json")
    recipe = bench.recipe
    if os.path.isfile(record_path):
        for name in ("pretrain", BASELINE):
            bench.progress.end(name, bench.progress.begin(name + " (cached: " + cache_dir + ")"),
                               skipped=True)
        return read_json(record_path)
    fresh_dir(cache_dir)
    pretrained = os.path.join(cache_dir, "pretrained_backbone")
    bench.step("pretrain", [*pretrain_command(), "-c", DETECTION_CONFIG, "--out", pretrained,
                            "--epochs", str(recipe.pretrain_epochs), "-o", *bench.overrides],
               "pretrain.log")
    checkpoints = os.path.join(cache_dir, "checkpoints")
    eval_dir = os.path.join(cache_dir, "eval")
    schedule = schedule_override(recipe.baseline_iterations, recipe.decay_fractions,
                                 recipe.warmup_steps)
    seconds = bench.step(BASELINE, _python(
        "train.py", "-c", DETECTION_CONFIG, "-o", "weights=null", schedule,
        f"pretrain_weights={pretrained}", f"max_iters={recipe.baseline_iterations}",
        f"snapshot_iter={recipe.snapshot_iter}", *bench.overrides, "--eval",
        "--checkpoint_path", checkpoints, "--output_eval", eval_dir), "baseline.log")
    record = baseline_record(eval_dir, checkpoints, recipe.snapshot_iter, seconds)
    write_json(record_path, record)
    return record


def baseline_record(eval_dir, checkpoints, snapshot_iter, seconds):
    """What the bench keeps of a baseline train.py run (--output_eval `eval_dir`,
    --checkpoint_path `checkpoints`): its mAP curve, final mAP, last-fifth gain and
    whether it converged, model_final, FLOPs, params, parameter file size, seconds."""
    summary = read_json(os.path.join(eval_dir, "train_summary.json"))
    curve = map_curve(summary, snapshot_iter)
    gain = last_fifth_gain(curve)
    return {"curve": [{"iteration": it, "map": value} for it, value in curve],
            "map": curve[-1][1], "last_fifth_gain": gain,
            "converged": gain is not None and gain < CONVERGED_GAIN,
            "model_final": os.path.join(checkpoints, "model_final"),
            "flops": summary["flops_after"], "params": summary["params_after"],
            "size_mb": _params_mb(summary["last_checkpoint"]), "train_seconds": seconds}


def _params_mb(checkpoint):
    return os.path.getsize(os.path.join(checkpoint, "eval_model", "__params__")) / 2 ** 20


def run_slim_config(slim_config):
    """The slim config of one fine-tuning run: `slim_config` (None: no strategy, the
    control) with the compressor's epochs, evaluation and checkpoint place replaced."""
    if slim_config is None:
        return {"version": 1.0, "compressor": {"strategies": []}}
    with open(os.path.join(ROOT, slim_config), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def sensitivity_entries(config):
    """{strategy name: options} of the entries of a slim config dict that read a
    sensitivities file."""
    return {name: options for name, options in config.get("strategies", {}).items()
            if "sensitivities_file" in options}


def sensitivities_path(bench):
    """The baseline's sensitivities file, shared by every method and seed."""
    return os.path.join(bench.cache_dir, "sensitivities.json")


def measure_sensitivities(bench, methods, model_final, workers):
    """`python -m slim sensitivity` on the baseline into the cache, before any fine-tuning
    run, for every method that searches ratios by it (so that runs at a time never measure
    the same file at once); a rerun, or a second method with the same entries, measures
    only what is missing."""
    for method, spec in methods.items():
        config = run_slim_config(spec.slim_config)
        for name, options in sensitivity_entries(config).items():
            options["sensitivities_file"] = sensitivities_path(bench)
            slim_path = os.path.join(bench.cache_dir, f"sensitivity_{method}.yaml")
            with open(slim_path, "w", encoding="utf-8") as handle:
                yaml.safe_dump(config, handle, sort_keys=False)
            bench.step(sensitivity_step(method), _python(
                "-m", "slim", "sensitivity", "-c", DETECTION_CONFIG, "-s", slim_path,
                "--strategy", name, "--workers", str(workers),
                "-o", f"weights={model_final}", *bench.overrides), f"sensitivity_{method}.log")


def sensitivity_step(method):
    return f"sensitivities for {method}"


def finetune_plan(bench, method, slim_config, seed, model_final):
    """(run dir, slim config dict, compress.py command, key) of one fine-tuning run."""
    recipe = bench.recipe
    run_dir = run_dir_of(bench, method, seed)
    config = run_slim_config(slim_config)
    config["compressor"].update({"epoch": recipe.finetune_epochs,
                                 "eval_epoch": recipe.finetune_epochs,
                                 "checkpoint_path": os.path.join(run_dir, "checkpoints")})
    for strategy in sensitivity_entries(config).values():  # one per baseline, shared by seeds
        strategy["sensitivities_file"] = sensitivities_path(bench)
    schedule = schedule_override(recipe.finetune_iterations, recipe.decay_fractions,
                                 recipe.warmup_steps)
    command = _python(
        "compress.py", "-s", os.path.join(run_dir, "slim.yaml"), "-c", DETECTION_CONFIG, "-o",
        f"weights={model_final}", f"random_seed={seed}", f"max_iters={recipe.epoch_iterations}",
        schedule, *bench.overrides, "--output_eval", run_dir)
    if needs_control(method):
        # everything the control's key hashes (recipe, overrides, seed, baseline) is in
        # this command too: a control made anew means this run is made anew
        for strategy in distillation_entries(config).values():
            strategy["teacher_weights"] = control_params(bench, run_dir_of(bench, CONTROL, seed))
    for strategy in config.get("strategies", {}).values():
        strategy.update(METHODS[method].options.get(strategy.get("class"), {})
                        if method in METHODS else {})
    return run_dir, config, command, config_hash(config, command)


def run_dir_of(bench, method, seed):
    """The directory of `method`'s fine-tuning run with `seed`."""
    return os.path.join(bench.out, bench.recipe.runs_dir, f"{method}_seed{seed}")


def distillation_entries(config):
    """{strategy name: options} of the DistillationStrategy entries of a slim config dict."""
    return {name: options for name, options in config.get("strategies", {}).items()
            if options.get("class") == "DistillationStrategy"}


def control_params(bench, control_dir):
    """The combined params file of a control run's last epoch (a teacher's weights)."""
    return os.path.join(control_dir, "checkpoints", str(bench.recipe.finetune_epochs - 1),
                        "eval_model", "__params__")


def needs_control(method):
    """Whether `method`'s runs read the control run of their seed (so start after it)."""
    return method in METHODS and METHODS[method].teacher == CONTROL


def run_result(run_dir, seconds):
    """What the table needs of a finished run: mAP, FLOPs, params, size, time."""
    summary = read_json(os.path.join(run_dir, "compress_summary.json"))
    return {"seed": None, "map": 100.0 * summary["history"][-1]["mAP"],
            "flops": summary["flops_after"], "params": summary["params_after"],
            "size_mb": _params_mb(summary["last_checkpoint"]), "seconds": seconds}


def finetune(bench, method, slim_config, seed, model_final):
    """One compress.py run from the baseline: its summary (mAP, FLOPs, params, size); a run
    done before with the same slim config and command is reused."""
    run_dir, config, command, key = finetune_plan(bench, method, slim_config, seed, model_final)
    done = finished_run(run_dir, key)
    if done is not None:
        bench.progress.note(f"{method} seed {seed}: done before (same slim config and "
                            "command), reused")
        return done
    fresh_dir(run_dir)
    with open(os.path.join(run_dir, "slim.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    seconds = bench.step(f"{method} seed {seed}", command, f"{method}_seed{seed}.log")
    result = dict(run_result(run_dir, seconds), seed=seed)
    write_json(os.path.join(run_dir, RUN_RESULT), {"key": key, "result": result})
    return result


def finished_run(run_dir, key):
    """The result of a run in `run_dir` made with the same slim config and command (`key`),
    or None: a rerun of the bench trains only what is missing."""
    path = os.path.join(run_dir, RUN_RESULT)
    if not os.path.isfile(path):
        return None
    record = read_json(path)
    return record["result"] if record.get("key") == key else None


def expected_seconds(recipe, methods, cached, workers=1):
    """Step name -> expected seconds on one thread (for the ETA, which rescales them by
    the pace of the finished steps)."""
    baseline = (recipe.baseline_iterations * recipe.seconds_per_iteration
                + recipe.baseline_iterations // recipe.snapshot_iter * recipe.seconds_per_eval)
    steps = {"dataset": 40.0 * recipe.train_images / 2000,
             "pretrain": 0.0 if cached else recipe.pretrain_seconds,
             BASELINE: 0.0 if cached else baseline}
    measuring = SENSITIVITY_SECONDS / workers  # the first such method measures, later ones read
    for method, spec in methods.items():
        if sensitivity_entries(run_slim_config(spec.slim_config)):
            steps[sensitivity_step(method)] = measuring
            measuring = recipe.seconds_per_eval
    finetune = recipe.finetune_iterations * recipe.seconds_per_iteration + recipe.seconds_per_eval
    for method in [CONTROL, *methods]:
        for seed in recipe.seeds:
            steps[f"{method} seed {seed}"] = finetune
    return steps


def paddle_version():
    for distribution in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def step_env(threads):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   CPU_NUM=str(threads))
    return env


def main(argv=None):
    args = parse_args(argv)
    methods = selected_methods(args.methods)
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    recipe = QUICK if args.quick else RECIPES[args.recipe]
    out = args.out or ("output/accuracy_quick" if args.quick else "output/accuracy")
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    os.chdir(ROOT)
    check_places(out, recipe)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    overrides = feed_overrides(recipe, threads)
    with open(DETECTION_CONFIG, encoding="utf-8") as handle:
        key = baseline_key(handle.read(), recipe, overrides, paddle_version())
    cache_dir = os.path.join(out, "cache", key[:16])
    cached = os.path.isfile(os.path.join(cache_dir, "baseline.json"))
    progress = Progress(expected_seconds(recipe, methods, cached, args.jobs), args.jobs)
    bench = Bench(recipe, out, step_env(threads), overrides, progress, cache_dir)
    print(f"accuracy bench: {DETECTION_CONFIG}, recipe {recipe.name} ({recipe.finetune_epochs} "
          f"fine-tuning epochs), methods {', '.join(methods)}, seeds {list(recipe.seeds)}, "
          f"{args.jobs} job(s) of {threads} thread(s), logs in {out}/logs", flush=True)
    make_dataset(bench)
    baseline = cached_baseline(bench, cache_dir)
    gain = baseline["last_fifth_gain"]
    print(f"    baseline mAP {baseline['map']:.2f}, last fifth of its schedule gained "
          f"{'n/a' if gain is None else f'{gain:.2f}'} points: "
          f"{'converged' if baseline['converged'] else 'NOT converged'}", flush=True)
    measure_sensitivities(bench, methods, baseline["model_final"], args.jobs)
    description = {"config": DETECTION_CONFIG, "recipe": dataclasses.asdict(recipe),
                   "quick": args.quick, "threads": threads, "jobs": args.jobs,
                   "paddle": paddle_version(),
                   "methods": {name: dataclasses.asdict(m) for name, m in methods.items()}}
    # seed-major: a bench stopped after its first seed still compares every method
    plan = [(method, slim_config, seed) for seed in recipe.seeds
            for method, slim_config in [(CONTROL, None),
                                        *[(n, m.slim_config) for n, m in methods.items()]]]

    def save_partial(runs):  # after every run: a long bench stopped half-way keeps its results
        write_json(os.path.join(out, "accuracy.json"),
                   dict(description, complete=False, baseline=baseline, runs=runs,
                        rows=method_rows(runs, baseline)))

    runs = finetune_all(bench, plan, baseline["model_final"], args.jobs, save_partial)
    rows = method_rows(runs, baseline)
    lines = results_table(rows)
    total = time.perf_counter() - bench.progress.started
    result = dict(description, complete=True, baseline=baseline, rows=rows, runs=runs,
                  total_seconds=total)
    written = [write_json(os.path.join(out, "accuracy.json"), result)]
    if recipe.results_json is not None:
        written.append(write_json(recipe.results_json, result))
    print("\n" + "\n".join(lines))
    print(f"\n{recipe.test_images} test images; mAP in points; drop = control mean - method mean; "
          f"total {_minutes(total)}, {args.jobs} job(s) of {threads} thread(s); "
          f"wrote {', '.join(written)}")
    return result


def finetune_all(bench, plan, model_final, jobs, after_each=None):
    """The fine-tuning runs of `plan` ([(method, slim config, seed)]), `jobs` at a time:
    {method: [run results in seed order]}, in plan order whatever order they finish in.
    `after_each(runs so far)` is called as each finishes; the first failure stops the
    runs not yet started and is raised once the running ones end; Ctrl-C or SIGTERM also
    stops the running ones (bench.processes) and is raised. A run of a method that
    needs_control starts after all others and waits for the control run of its seed."""
    results = {}
    lock = threading.Lock()
    futures = {}
    submitting = threading.Lock()  # held until every run is submitted

    def ordered():
        runs = {}
        for method, _, seed in plan:
            if (method, seed) in results:
                runs.setdefault(method, []).append(results[(method, seed)])
        return runs

    def one(method, slim_config, seed):
        if needs_control(method):
            with submitting:
                control = futures[(CONTROL, seed)]
            control.result()  # raises the control's failure
        result = finetune(bench, method, slim_config, seed, model_final)
        with lock:
            results[(method, seed)] = result
            if after_each is not None:
                after_each(ordered())

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        # first-in first-out: a control has started before any run that waits for it
        try:  # a Ctrl-C while submitting stops the started steps too
            with submitting:
                for method, slim_config, seed in sorted(plan,
                                                        key=lambda item: needs_control(item[0])):
                    futures[(method, seed)] = pool.submit(one, method, slim_config, seed)
            for future in concurrent.futures.as_completed(list(futures.values())):
                if future.exception() is not None:
                    raise future.exception()
        except BaseException as error:
            for other in futures.values():
                other.cancel()
            if isinstance(error, KeyboardInterrupt) and bench is not None:
                bench.processes.stop()
            raise
    return ordered()


@exit_on_user_error
def cli(argv=None):
    main(argv)


if __name__ == "__main__":
    cli()
