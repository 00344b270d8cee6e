"""`python -m slim sensitivity`: measure how the metric drops as each conv group is pruned alone.

    python -m slim sensitivity -c configs/yolov3_mobilenet_v1_voc.yml \\
        -s SLIM.yaml [-o KEY=VALUE ...] [--strategy NAME] [--workers N] [--png FILE.png]

Example (${checkpoint_path}/${epoch}: a checkpoint compress.py wrote):
    python -m slim sensitivity -c configs/yolov3_mobilenet_v1_demo.yml \\
        -s configs/yolov3_mobilenet_v1_sensitive_slim.yaml -o weights=${checkpoint_path}/${epoch}

Takes the slim config's SensitivePruneStrategy entry (pruned_params, delta_rate, eval_rate,
sensitivities_file, the pruner's criterion) and the detection config's `weights` (a
trained model: the sensitivities of random weights mean nothing). Every selected channel
group (coupled convs are one group) is pruned alone at delta_rate, 2 * delta_rate, ...
below 1 by zeroing its removed channels (what the pruned program computes, without
rebuilding it; `slim.prune.masking`) and the eval program is scored on the first
`eval_rate` of the eval set. The metric per group and ratio goes into sensitivities_file
(JSON) as it comes; a rerun measures only what is missing, and a file of another model
or eval set is refused. `--workers N` splits the groups over N processes, each building
its own programs. Prints the table of metric loss (mAP points) per group and ratio;
`--png` draws the loss curves. compress.py's SensitivePruneStrategy then reads the file.
"""
import math
import signal
import sys
import types

from slim.commands.cli import add_override_argument
from slim.errors import UserError, shorten
from slim.io.output_places import check_output_file

STRATEGY_CLASS = "SensitivePruneStrategy"


def add_arguments(parser):
    """The `sensitivity` options."""
    parser.add_argument("-c", "--config", required=True,
                        help="detection config YAML; its `weights` are the model measured")
    parser.add_argument("-s", "--slim_file", required=True, metavar="SLIM.yaml",
                        help="slim config with a SensitivePruneStrategy entry")
    add_override_argument(parser, "override detection config options (dotted keys, YAML values)")
    parser.add_argument("--strategy", default=None, metavar="NAME",
                        help="the SensitivePruneStrategy entry to use when there are several")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes measuring groups in parallel (default 1)")
    parser.add_argument("--png", default=None, metavar="FILE.png",
                        help="draw the metric loss against the ratio, one line per group")
    return parser


def run(args, out=None):
    """Measure the missing sensitivities, print the table, draw --png; returns 0."""
    from slim.strategies.sensitive_prune import lock_sensitivities_file
    out = out or sys.stdout
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    spec = measuring_spec(args)
    png = check_output_file(args.png, "--png") if args.png else None
    with lock_sensitivities_file(spec.sensitivities_file):  # before the model is even built
        return _measure_and_report(args, spec, png, out)


def _measure_and_report(args, spec, png, out):
    """`run`'s work once the sensitivities file is claimed."""
    from tqdm import tqdm

    from slim.prune.sensitivity import selected_groups, sensitivity_ratios
    from slim.strategies.sensitive_prune import SensitivityFile, measure, model_identity
    setup = measuring_setup(spec, log=lambda message: print(message, file=out))
    program = setup.programs.eval.program
    groups = selected_groups(program, spec.pruned_params, setup.graph)
    ratios = sensitivity_ratios(spec.delta_rate)
    store = SensitivityFile.open(spec.sensitivities_file,
                                 model_identity(program, spec.eval_rate, spec.criterion))
    store.check_baseline(setup.evaluate())
    missing = store.missing([name for name, _ in groups], ratios)
    print(f"{len(groups)} groups x {len(ratios)} ratios, baseline {spec.metric_name} mAP "
          f"{100 * store.baseline:.2f} on {100 * spec.eval_rate:g}% of the eval set: "
          f"{len(missing)} to measure into '{spec.sensitivities_file}'", file=out)
    if missing:
        store.check_writable()
        with tqdm(total=len(missing), desc="sensitivity", unit="eval") as bar:
            if args.workers == 1 or len(groups) == 1:
                measure(missing, program, setup.graph, setup.scope, spec.pruned_params,
                        spec.criterion, setup.evaluate, store.record, place=setup.place,
                        progress=lambda: bar.update(1))
            else:
                measure_in_workers(spec, missing, args.workers, store, dict(groups), bar)
    names = [name for name, _ in groups]
    print(format_table(store, names, ratios), file=out)
    if png is not None:
        written, file_name = png
        plot_sensitivities(store, names, ratios, written.path(file_name))
        written.record(file_name)
        print(f"chart written: {args.png}", file=out)
    return 0


def measuring_spec(args):
    """What a measurement needs, as plain values a worker process can take: the configs,
    the strategy entry's options and the detection metric; one-line errors before work."""
    from slim.config import load_config, load_slim_config
    from slim.metrics import resolve_metric_name
    from slim.strategies.uniform_prune import pruner_criterion
    slim_config = load_slim_config(args.slim_file)
    entries = {name: options for name, options in slim_config.strategies.items()
               if type(options).__name__ == STRATEGY_CLASS}
    if not entries:
        raise UserError(f"{args.slim_file}: no strategy of class {STRATEGY_CLASS}; add one "
                        "(pruned_params, delta_rate, eval_rate, sensitivities_file)")
    if args.strategy is None and len(entries) > 1:
        raise UserError(f"{args.slim_file}: {len(entries)} {STRATEGY_CLASS} entries "
                        f"({', '.join(entries)}); choose one with --strategy NAME")
    name = args.strategy or next(iter(entries))
    if name not in entries:
        raise UserError(f"{args.slim_file}: --strategy '{shorten(name, 60)}' is not a "
                        f"{STRATEGY_CLASS} entry; entries: {', '.join(entries)}")
    options = entries[name]
    cfg = load_config(args.config, args.opt)
    return types.SimpleNamespace(
        config=args.config, overrides=list(args.opt), weights=cfg.get("weights"),
        metric_name=resolve_metric_name(cfg.get("metric", "VOC")),
        pruned_params=options.pruned_params, delta_rate=float(options.delta_rate),
        eval_rate=float(options.eval_rate) if options.eval_rate is not None else 1.0,
        criterion=pruner_criterion(name, options.pruner, slim_config.pruners[options.pruner]),
        sensitivities_file=options.sensitivities_file)


def measuring_setup(spec, log=print):
    """The programs (as compress.py builds them), scope with the config's `weights`, the
    eval program's channel graph and `evaluate()` (mAP on the first eval_rate of the eval
    set) of `spec`."""
    from slim.commands.inspect_plan import programs_from_config
    from slim.config import create, load_config
    from slim.data.loader import build_eval_loader
    from slim.engine.evaluation import make_metric
    from slim.prune.graph import analyze_program
    from slim.runs.epoch_hooks import strategy_evaluator
    from slim.runs.restore import load_weights_into
    cfg = load_config(spec.config, spec.overrides)
    programs, scope, executor, _ = programs_from_config(cfg, spec.config, None)
    place = executor.place
    if spec.weights is not None:  # set: loaded (an empty value is refused there)
        load_weights_into("weights", spec.weights, programs, scope, executor, place, False, log)
    else:
        log(f"warning: {spec.config} sets no weights: these are the sensitivities of random "
            "initial weights, which say nothing about a trained model (set -o weights=DIR)")
    eval_loader = build_eval_loader(create(cfg["eval_feed"], cfg))
    job = types.SimpleNamespace(programs=programs, executor=executor, scope=scope)
    evaluator = strategy_evaluator(job, eval_loader, make_metric(cfg, eval_loader))
    return types.SimpleNamespace(programs=programs, scope=scope, place=place,
                                 graph=analyze_program(programs.eval.program),
                                 evaluate=lambda: evaluator(fraction=spec.eval_rate))


def split_by_group(entries, workers):
    """`entries` [(group, ratio)] dealt to at most `workers` lists, whole groups round-robin."""
    names = list(dict.fromkeys(name for name, _ in entries))
    shares = [[] for _ in range(min(workers, len(names)))]
    for position, name in enumerate(names):
        shares[position % len(shares)].extend(entry for entry in entries if entry[0] == name)
    return shares


def measure_in_workers(spec, entries, workers, store, groups, bar):
    """Measure `entries` in worker processes (spawned; each builds its own programs and
    scope); record each result in `store` as it arrives. A worker's error is a UserError."""
    import multiprocessing
    import queue as queue_lib
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker, args=(spec, share, results), daemon=True)
                 for share in split_by_group(entries, workers)]
    # Ctrl-C is the parent's alone: a terminal sends SIGINT to the whole process group, and
    # a worker interrupted inside Paddle (importing it, or mid-run) tore its runtime down
    # with threads running: tracebacks, and now and then a native abort ("terminate called
    # without an active exception") after the parent's "interrupted". The workers start
    # with SIGINT ignored (inherited through spawn's exec) and are killed on an interrupt.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    finished = False
    try:
        for _ in range(len(entries)):
            while True:
                try:
                    message = results.get(timeout=5)
                    break
                except queue_lib.Empty:
                    _check_workers_alive(processes, spec.sensitivities_file)
            if message[0] == "error":
                raise UserError(message[1])
            _, name, ratio, metric = message
            store.record(name, groups[name], ratio, metric)
            bar.update(1)
        finished = True
    finally:
        for process in processes:
            if finished:
                process.join(timeout=5)
            if process.is_alive():  # SIGKILL: SIGTERM would run Paddle's crash-report handler
                process.kill()
                process.join(timeout=5)


def _check_workers_alive(processes, sensitivities_file):
    """UserError when a worker died, or when all have ended with results still owed."""
    dead = [process for process in processes if process.exitcode not in (None, 0)]
    if dead or all(process.exitcode == 0 for process in processes):
        reason = f"died (exit code {dead[0].exitcode})" if dead else "ended without all results"
        raise UserError(f"a sensitivity worker process {reason}; the entries measured so far are "
                        f"in '{sensitivities_file}': run again to measure the rest")


def _worker(spec, entries, results):
    """A worker process: measure `entries`, put ('result', name, ratio, metric) for each,
    or one ('error', message)."""
    import paddle

    import slim  # noqa: F401  (the classic static IR)
    from slim.strategies.sensitive_prune import measure
    paddle.enable_static()
    try:
        setup = measuring_setup(spec, log=lambda message: None)
        measure(entries, setup.programs.eval.program, setup.graph, setup.scope,
                spec.pruned_params, spec.criterion, setup.evaluate,
                lambda name, group, ratio, metric: results.put(("result", name, ratio, metric)),
                place=setup.place)
    except Exception as error:  # noqa: BLE001 - reported to the parent as one line
        results.put(("error", f"sensitivity worker: {type(error).__name__}: {shorten(error, 300)}"))


def format_table(store, names, ratios):
    """Metric loss (mAP points, baseline minus pruned) per group (rows) and ratio (columns)."""
    from slim.prune.sensitivity import ratio_key
    width = max([len(name) for name in names] + [5])
    header = f"{'group':<{width}}  " + " ".join(f"{ratio_key(r):>6}" for r in ratios)
    lines = [f"metric loss (mAP points; baseline {100 * store.baseline:.2f}) when one group "
             "alone is pruned by a ratio:", header]
    for name in names:
        losses = store.losses(name)
        cells = [f"{100 * losses[r][0]:6.2f}" if r in losses else f"{'-':>6}" for r in ratios]
        lines.append(f"{name:<{width}}  " + " ".join(cells))
    return "\n".join(lines)


def plot_sensitivities(store, names, ratios, path):
    """Line chart of metric loss (mAP points) against ratio, one line per group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(9.0 + 2.2 * math.ceil(len(names) / 45), 5.5))
    for name in names:
        losses = store.losses(name)
        measured = [r for r in ratios if r in losses]
        axes.plot([0.0] + measured, [0.0] + [100 * losses[r][0] for r in measured],
                  marker="o", markersize=3, label=name)
    axes.set_xlabel("ratio of the group's channels removed")
    axes.set_ylabel("metric loss (mAP points)")
    axes.set_title(f"sensitivity per channel group (baseline mAP {100 * store.baseline:.2f})")
    columns = max(1, math.ceil(len(names) / 45))  # beside the plot, 45 names a column
    axes.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=columns)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path

