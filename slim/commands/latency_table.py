"""`python -m slim latency-table`: measure a model's per-layer latency on a runtime into a table.

    python -m slim latency-table (-c CONFIG [--size PX] | --model_dir DIR [--model_filename F
        --params_filename P] [--input_shape [FEED=]C,H,W ...]) --runtime paddle|paddle-onednn|
        onnxruntime [--threads 1] [--grid 1,0.75,0.5,0.25] [--step 8] [--rounds 5] --out T.json

Example (the demo model at 64 px, two widths, one round: a smoke run of a minute):
    python -m slim latency-table -c configs/yolov3_mobilenet_v1_demo.yml --size 64 \\
        --runtime paddle --grid 1,0.5 --rounds 1 --out output/latency_table.json

Every prunable conv layer of the model (the conv with its fused batch_norm / bias add and
activation) is rebuilt at each channel count of the grid (every fraction of a group's
channels, rounded to a multiple of --step) and timed in the runtime, interleaved, median
ms per count; the table is keyed by runtime, threads, the layer's input size and shape, so
a rerun (another model, size or runtime into the same --out) measures only what is
missing. Then the whole model is timed interleaved with a copy pruned to the grid's middle
counts: the remainder (whole ms minus the layers' sum) is stored, and the prediction of
the pruned copy is printed beside its measurement (the error of the table).

With -c, the config's YOLOv3 eval program at --size px (default: the eval feed's size)
gets random weights with batch_norm statistics calibrated on a random image and its
objectness silenced (NMS costs ~0 alike for every width): latency does not depend on a
trained model's values otherwise. Writes only --out (a JSON file; an existing table is
extended).
"""
import os
import sys
import tempfile
import time

from slim.commands.cli import add_override_argument
from slim.errors import UserError, shorten

DEFAULT_ROUNDS = 5


def add_arguments(parser):
    """The `latency-table` options."""
    from slim.prune.latency import DEFAULT_GRID, DEFAULT_RUNTIME, DEFAULT_STEP, RUNTIMES
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", default=None, help="detection config YAML")
    source.add_argument("--model_dir", default=None, metavar="DIR",
                        help="an exported inference model's directory")
    add_override_argument(parser, "with -c: override config options")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="with -c: input size (default: the eval feed's image_shape)")
    parser.add_argument("--model_filename", default=None, metavar="F")
    parser.add_argument("--params_filename", default=None, metavar="P")
    parser.add_argument("--input_shape", nargs="+", default=None, metavar="[FEED=]C,H,W",
                        help="with --model_dir: the shape of a feed with unknown dims")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME,
                        help=f"one of {', '.join(RUNTIMES)} (default {DEFAULT_RUNTIME})")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads")
    parser.add_argument("--grid", default=",".join(f"{f:g}" for f in DEFAULT_GRID),
                        metavar="F,F,...", help="fractions of each group's channels to measure")
    parser.add_argument("--step", type=int, default=DEFAULT_STEP,
                        help="grid channel counts are multiples of this")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="interleaved rounds per layer (the whole model: twice as many)")
    parser.add_argument("--out", required=True, metavar="TABLE.json",
                        help="the table to write or extend")
    return parser


def parse_grid(text):
    """The --grid fractions; one-line error unless numbers in (0, 1]."""
    try:
        fractions = [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        fractions = []
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise UserError(f"--grid '{shorten(str(text), 60)}': expected fractions in (0, 1] "
                        "separated by commas, e.g. 1,0.75,0.5,0.25")
    return tuple(fractions)


def run(args, out=None):
    """Measure what the table lacks, check the prediction, write --out; returns 0."""
    from slim.io.output_places import check_output_file
    from slim.prune.latency import LatencyTable, context_key
    from slim.workflow import latency_table as measure
    out = out or sys.stdout
    runtime = measure.check_runtime(args.runtime)
    grid = parse_grid(args.grid)
    for name in ("threads", "step", "rounds"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.config is None and (args.opt or args.size):
        raise UserError("-o and --size go with -c CONFIG")
    if not str(args.out).endswith(".json"):
        raise UserError(f"--out '{shorten(str(args.out))}' must end with .json")
    written, out_name = check_output_file(args.out, "--out")
    table = LatencyTable.load(args.out, missing_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="slim-latency-table-") as work_dir:
        files = model_files(args, work_dir)
        loaded = measure.LoadedModel(files, args.input_shape if args.model_dir else None)
        candidates = measure.candidates_of(loaded.sizes, grid, args.step)
        context = context_key(runtime, args.threads)
        missing = table.missing(context, loaded.layers, candidates)
        print(f"{len(loaded.layers)} conv layers, {len(loaded.sizes)} channel groups, feeds "
              f"{loaded.shapes}; {runtime}, {args.threads} thread(s): {len(missing)} layer "
              f"counts to measure (load average {measure.load_average()})", file=out, flush=True)

        def save():
            written.write_bytes(out_name, _table_bytes(table))

        def progress(done, total, key):
            elapsed = time.time() - started
            eta = elapsed / done * (total - done)
            print(f"  {done}/{total} measured ({key}), {elapsed:.0f} s, ETA {eta:.0f} s",
                  file=out, flush=True)
        measure.measure_layers(table, runtime, args.threads, missing, work_dir, args.rounds,
                               progress=progress, save=save)
        record = measure.check_model(table, loaded, runtime, args.threads, candidates, work_dir,
                                     grid, args.step, rounds=2 * args.rounds)
    path = written.write_bytes(out_name, _table_bytes(table))
    check = record["check"]
    print(f"whole model: {record['full']['ms']:.2f} ms measured (layers {record['layers_ms']['full']:.2f}"
          f"); fit: {record['fixed_ms']:.2f} ms + {record['scale']:.2f} x layers (with the "
          f"{record['lowest_fraction']:g} counts: {record['lowest']['ms']:.2f} ms). Check at the "
          f"grid's {check['fraction']:g} counts: predicted {check['predicted_ms']:.2f} ms, measured "
          f"{check['measured']['paired_ms']:.2f} ms (paired; median "
          f"{check['measured']['ms']:.2f}, p10 {check['measured']['p10']:.2f}, p90 "
          f"{check['measured']['p90']:.2f}): error {100 * check['error']:+.1f}%; speed-up "
          f"predicted {check['speedup_predicted']:.2f}x, measured {check['speedup_measured']:.2f}x"
          f" (median of {record['rounds']} interleaved rounds; load average "
          f"{record['load_average'][1]})", file=out)
    print(f"wrote {path}", file=out)
    return 0


def _table_bytes(table):
    import json
    return json.dumps(table.to_dict(), indent=1, sort_keys=True).encode("utf-8")


def model_files(args, work_dir):
    """The ModelFiles to measure: --model_dir's, or -c's model exported into `work_dir`."""
    from slim.io.inference_model import find_model_files
    if args.model_dir:
        return find_model_files(args.model_dir, args.model_filename, args.params_filename)
    from slim.config import load_config
    from slim.workflow.latency_table import export_config_model
    cfg = load_config(args.config, list(args.opt) + ["weights=null", "use_gpu=false"])
    size = args.size or eval_size(cfg)
    return export_config_model(cfg, size, os.path.join(work_dir, "model"))


def eval_size(cfg):
    """The eval feed's image size (px)."""
    try:
        shape = cfg[cfg["eval_feed"]]["image_shape"]
    except (KeyError, TypeError):
        shape = None
    if not shape:
        raise UserError("the config has no eval feed image_shape: give --size PX")
    return int(shape[-1])
