"""`python -m slim prune`: prune an exported Paddle inference model of any architecture, once.

    python -m slim prune --model_dir DIR [--model_filename F --params_filename P] \\
        (--target_ratio 0.5 | --ratio 0.3 [--pruned_params auto|REGEX ...] [--criterion l1_norm]
         | -s SLIM.yaml [--strategy NAME]) [--round_to 1] --out OUT [--latency_runs 20]
        [--threads 1]
        [--input_shape [FEED=]C,H,W ...] [--on_unknown error|skip]

Example (${checkpoint_path}/${epoch}: a checkpoint compress.py wrote):
    python -m slim prune --model_dir ${checkpoint_path}/${epoch}/eval_model \\
        --model_filename __model__.infer --params_filename __params__ --target_ratio 0.5 \\
        --out output/pruned_model --latency_runs 2

No training: the model is loaded with `paddle.static.load_inference_model` (a classic
ProgramDesc, or a Paddle 3 new-IR `.json` model, pruned through the PIR view of
slim.prune.pir and saved as `.json` again), its conv filters selected by
`pruned_params` (`auto`: every prunable conv; a regex or a list of them, full match, as
in the seed's slim config) are pruned so that `target_ratio` of the FLOPs goes (a
searched uniform ratio, then single groups moved; `--ratio`: one given ratio), keeping
the channels that `criterion` (l1_norm, fpgm, bn_scale; activation, taylor with
`--images`) scores highest. The fetch targets keep their
shape (they are the model's contract: a classifier's logits, a detector's raw heads).
With `-s SLIM.yaml` the options come from its UniformPruneStrategy entry (and its
pruner's criterion); options given on the command line win over it.

OUT is written as a whole (absent, empty, or an OUT this command wrote before): the
pruned model under the input's file names (program and combined params, or one file
per parameter), `plan.json` (the kept channels of every group, `slim.prune.plan`
format) and `report.json`: FLOPs (multiply-adds per image at the feed shapes), params,
size on disk, before and after, and Paddle Inference CPU latency of both models on one
random input (batch 1 unless the model fixes it; Paddle's default kernels, oneDNN where
it enables them; `--latency_runs` interleaved pairs after warm-up; the speed-up is the
median of the per-pair ratios), where the pruned model must also give outputs of the
input model's shapes. `--latency_runs 0` skips Paddle Inference.

Feeds must have static shapes but for the batch axis; `--input_shape` fixes others
(e.g. `image=3,224,224` for a model exported with [-1, 3, -1, -1]): they are used for
counting FLOPs and for the latency input only; the pruned model keeps the input's
shapes. Float feeds get standard normal values, integer feeds ones.
"""
import dataclasses
import json
import os
import sys
import time
import warnings

from slim.errors import UserError, shorten
from slim.io.export import first_line, run_predictor
from slim.io.inference_model import (  # noqa: F401  (feed_shapes & co. used to live here)
    feed_shapes,
    find_model_files,
    inference_config,
    load_inference_model,
    parse_input_shapes,
    random_feeds,
    save_inference_model,
)
from slim.io.latency import (
    WARMUP_RUNS,
    interleaved_timings,
    machine_info,
    pair_summary,
    speedup_text,
)
from slim.io.output_places import (
    check_replaceable_dir,
    make_owned_temp_dir,
    remove_owned_dir,
    replace_dir,
)
from slim.prune.pir import ir_guard

STRATEGY_CLASS = "UniformPruneStrategy"
PLAN_NAME = "plan.json"
REPORT_NAME = "report.json"
REPORT_FORMAT = "slim-prune-report"
REPORT_VERSION = 1
DEFAULT_CRITERION = "l1_norm"
DEFAULT_LATENCY_RUNS = 20


def add_arguments(parser):
    """The `prune` options."""
    parser.add_argument("--model_dir", required=True, metavar="DIR",
                        help="the exported inference model's directory")
    parser.add_argument("--model_filename", default=None, metavar="F",
                        help="program file in DIR (default: __model__, else the one *.pdmodel)")
    parser.add_argument("--params_filename", default=None, metavar="P",
                        help="combined params file in DIR (default: __params__ or PREFIX.pdiparams "
                             "beside the program; neither: one file per parameter)")
    parser.add_argument("-s", "--slim_file", default=None, metavar="SLIM.yaml",
                        help=f"take pruned_params, target_ratio and criterion from its "
                             f"{STRATEGY_CLASS} entry")
    parser.add_argument("--strategy", default=None, metavar="NAME",
                        help=f"with -s: the {STRATEGY_CLASS} entry to use when there are several")
    parser.add_argument("--pruned_params", nargs="+", default=None, metavar="REGEX",
                        help="conv weights to prune: 'auto' (every prunable conv; the default "
                             "without -s), a regex, or several (full match)")
    parser.add_argument("--target_ratio", type=float, default=None, metavar="R",
                        help="fraction of the FLOPs to remove, in (0, 1)")
    parser.add_argument("--target_latency_ratio", type=float, default=None, metavar="R",
                        help="prune to R x the predicted latency on --runtime (a latency table "
                             "from `python -m slim latency-table`, --latency_table), instead of "
                             "a FLOPs target")
    parser.add_argument("--target_latency_ms", type=float, default=None, metavar="MS",
                        help="prune to this predicted latency (ms) on --runtime")
    parser.add_argument("--latency_table", default=None, metavar="T.json",
                        help="the latency table the latency target is predicted from")
    parser.add_argument("--runtime", default=None,
                        help="with a latency target: paddle, paddle-onednn (default) or "
                             "onnxruntime; the latency is then measured on it too")
    parser.add_argument("--ratio", type=float, default=None, metavar="R",
                        help="instead of --target_ratio: remove this fraction of every selected "
                             "group's channels, in (0, 1)")
    parser.add_argument("--round_to", type=int, default=1, metavar="N",
                        help="keep channel counts at multiples of N (default 1)")
    parser.add_argument("--criterion", default=None,
                        help="channel importance: l1_norm (default), fpgm, bn_scale; with "
                             "--images also activation, taylor (docs/prune-exported.md)")
    parser.add_argument("--on_unknown", choices=("error", "skip"), default="error",
                        help="a selected conv reaching an op without a channel rule: error "
                             "(default) or leave its channels unpruned")
    parser.add_argument("--input_shape", nargs="+", default=None, metavar="[FEED=]C,H,W",
                        help="fixed shape (without the batch axis) of a feed with unknown dims, "
                             "for counting FLOPs and the latency input")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="directory for the pruned model, plan.json and report.json "
                             "(absent, empty, or one this command wrote)")
    parser.add_argument("--latency_runs", type=int, default=DEFAULT_LATENCY_RUNS, metavar="N",
                        help=f"interleaved timing pairs in Paddle Inference (default "
                             f"{DEFAULT_LATENCY_RUNS}; 0: Paddle Inference is not run)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="Paddle Inference CPU math threads (default 1)")
    from slim.commands import prune_images
    prune_images.add_arguments(parser)
    return parser


@dataclasses.dataclass
class PruneRequest:
    """What to prune, resolved from the command line and the slim config."""
    pruned_params: object
    target_ratio: float
    criterion: str
    source: str  # where the options came from, for the report
    ratio: float = None  # --ratio: one uniform ratio instead of a FLOPs target
    latency: object = None  # a slim.prune.latency.LatencyTarget instead of target_ratio


def run(args, out=None):
    """Prune, save, measure and report; returns 0."""
    from slim.commands import prune_images
    out = out or sys.stdout
    request = prune_request(args)
    if args.latency_runs < 0:
        raise UserError(f"--latency_runs must be >= 0, got {args.latency_runs}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    use_images = prune_images.wants_images(args)
    files = find_model_files(args.model_dir, args.model_filename, args.params_filename)
    out_dir = check_replaceable_dir(args.out, "--out", inputs=[args.model_dir])
    classic_only = [name for name, given in (
        ("--criterion " + str(request.criterion), request.criterion in prune_images.DATA_CRITERIA),
        ("--reconstruct", args.reconstruct), ("--recover_iters", args.recover_iters > 0))
        if given]
    if files.pir and classic_only:
        raise UserError(f"{classic_only[0]} works on classic models only so far; "
                        f"'{shorten(files.model_path)}' is a .json (PIR) model: with --images "
                        "it gets the fidelity report and --max_output_error / --min_agreement")
    with ir_guard(files.pir):  # a Paddle 3 `.json` model is loaded, pruned and run in PIR
        return prune_model(args, request, files, out_dir, use_images, out)


def prune_model(args, request, files, out_dir, use_images, out):
    """`run` once the options and files are checked: load, plan, apply, save, measure."""
    import paddle

    from slim.commands import prune_images
    from slim.prune import analyze_program, apply_plan
    from slim.prune.flops import program_flops, program_params
    from slim.prune.shapes import concrete_program
    started = time.time()
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    model = load_inference_model(files, executor, scope)
    shapes = feed_shapes(model, args.input_shape)
    counted = concrete_program(model.program, scope, shapes, executor)  # one run: every dim
    session = prune_images.open_session(args, files, model, executor, inputs=[args.model_dir]) \
        if use_images else None
    # The fetch targets are the model's contract; the fetch ops pin them too, this says it
    # whatever the program's ops are.
    fixed = [var.name for var in model.fetch_vars]
    graph = analyze_program(model.program, fixed_vars=fixed)
    counted_graph = analyze_program(counted, fixed_vars=fixed)
    seconds = {}
    statistics = None
    if request.criterion in prune_images.DATA_CRITERIA:
        begun = time.time()
        statistics = session.statistics(graph, kinds=(request.criterion,))
        seconds["statistics"] = round(time.time() - begun, 2)
    before = {"flops": int(program_flops(counted)), "params": int(program_params(model.program)),
              "size_bytes": files.size_bytes(model.program)}
    search, predicted = None, None
    if args.max_output_error is not None or args.min_agreement is not None:
        def trial(ratio):  # the uniform ratio: every value is reachable, FLOPs grow with it
            trial_plan = make_plan(model, scope, request, args, counted, graph, statistics,
                                   ratio=ratio, quiet=True)
            undo = apply_plan(trial_plan, [model.program, counted], scope,
                              graphs=[graph, counted_graph])
            try:
                report = session.fidelity(model, scope, session.search_samples())
                report["flops_removed"] = 1.0 - program_flops(counted) / before["flops"]
                return report
            finally:
                undo.restore()
        high = make_plan(model, scope, request, args, counted, graph, statistics,
                         request.target_ratio, quiet=True).ratio \
            if request.target_ratio is not None else None
        ratio, search = prune_images.bounded_target(args, session, trial, high)
        plan = make_plan(model, scope, request, args, counted, graph, statistics, ratio=ratio)
    elif request.latency is not None:
        from slim.prune.latency import plan_for_latency
        plan, predicted = plan_for_latency(
            model.program, scope, request.pruned_params, request.latency, flops_program=counted,
            criterion=request.criterion, graph=graph, flops_graph=counted_graph,
            on_unknown=args.on_unknown, statistics=statistics)
    else:
        plan = make_plan(model, scope, request, args, counted, graph, statistics,
                         request.target_ratio)
    apply_plan(plan, [model.program, counted], scope, graphs=[graph, counted_graph])
    data = {}
    if session is not None:
        data = {"images": session.images.describe(), "task": args.task, "search": search,
                "fidelity": {"one_shot": session.fidelity(model, scope)}}
        prune_images.print_fidelity("one-shot", data["fidelity"]["one_shot"], out)
        if args.reconstruct:
            begun = time.time()
            data["reconstruction"] = session.reconstruct(plan, graph, model, scope)
            seconds["reconstruct"] = round(time.time() - begun, 2)
            data["fidelity"]["reconstructed"] = session.fidelity(model, scope)
            prune_images.print_fidelity("reconstructed", data["fidelity"]["reconstructed"], out)
        if args.recover_iters:
            identity = {"plan": plan.to_dict(), "lr": args.recover_lr,
                        "batch_size": args.batch_size, "reconstruct": bool(args.reconstruct)}
            begun = time.time()
            data["recovery"] = session.recover(model, scope, identity)
            seconds["recover"] = round(time.time() - begun, 2)
            data["fidelity"]["recovered"] = session.fidelity(model, scope)
            prune_images.print_fidelity("recovered", data["fidelity"]["recovered"], out)
        data["stage_seconds"] = seconds
    plan_seconds = time.time() - started
    temp_dir = make_owned_temp_dir(os.path.dirname(out_dir), ".slim-prune-")
    try:
        written = save_inference_model(model, executor, scope, temp_dir, files.model_filename,
                                       files.params_filename)
        pruned_files = dataclasses.replace(files, directory=temp_dir)
        after = {"flops": int(program_flops(counted)),
                 "params": int(program_params(model.program)),
                 "size_bytes": pruned_files.size_bytes(model.program)}
        plan.save(os.path.join(temp_dir, PLAN_NAME))
        feeds = random_feeds(model, shapes)
        if request.latency is not None:
            latency = measure_on_runtime(files, pruned_files, feeds, args.latency_runs,
                                         request.latency.runtime, args.threads)
        else:
            latency = measure_latency(files, pruned_files, feeds, args.latency_runs, args.threads)
        report = build_report(args, request, files, model, shapes, plan, before, after, latency,
                              written, plan_seconds, time.time() - started)
        report["latency_target"] = predicted
        report.update(data)
        with open(os.path.join(temp_dir, REPORT_NAME), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        replace_dir(temp_dir, out_dir, "--out")
    finally:
        remove_owned_dir(temp_dir)  # only when it was not moved to OUT
    print(format_report(report), file=out)
    return 0


def make_plan(model, scope, request, args, counted, graph, statistics, target_ratio=None,
              ratio=None, quiet=False):
    """The plan of `request` at `target_ratio` (or one uniform `ratio`); the engine's
    warnings as one line each (none when `quiet`: a trial of the accuracy-bounded search)."""
    from slim.prune import PruneWarning, plan_pruning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ratio = ratio if ratio is not None else request.ratio
        amount = {"ratio": ratio} if ratio is not None else {"target_ratio": target_ratio}
        plan = plan_pruning(model.program, scope, request.pruned_params, **amount,
                            round_to=args.round_to, criterion=request.criterion,
                            on_unknown=args.on_unknown, flops_program=counted, graph=graph,
                            statistics=statistics)
    for warning in [] if quiet else caught:
        if issubclass(warning.category, PruneWarning):  # one line, as the tool's errors
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    return plan


def prune_request(args):
    """The PruneRequest of `args`: -s's UniformPruneStrategy entry, overridden by the command
    line's options; one-line errors for a bad ratio or criterion, before any work."""
    pruned_params, target_ratio, criterion, source = None, None, None, "command line"
    slim_latency = None
    if args.slim_file:
        pruned_params, target_ratio, criterion, slim_latency = slim_config_options(
            args.slim_file, args.strategy)
        source = args.slim_file
    elif args.strategy:
        raise UserError("--strategy chooses an entry of the slim config: give -s SLIM.yaml too")
    if args.pruned_params is not None:
        given = args.pruned_params
        pruned_params = given[0] if len(given) == 1 else list(given)
    if args.target_ratio is not None:
        target_ratio = args.target_ratio
    if args.criterion is not None:
        criterion = args.criterion
    bounded = getattr(args, "max_output_error", None) is not None or \
        getattr(args, "min_agreement", None) is not None
    latency = latency_target(args, slim_latency)
    if latency is not None:
        if args.target_ratio is not None or bounded:
            raise UserError("a latency target (--target_latency_ratio / --target_latency_ms) "
                            "replaces --target_ratio and the accuracy-bounded search: give one")
        return PruneRequest(pruned_params if pruned_params is not None else "auto", None,
                            _checked_criterion(criterion), source, latency=latency)
    if args.round_to < 1:
        raise UserError(f"--round_to must be a positive integer, got {args.round_to}")
    if args.ratio is not None:
        if args.target_ratio is not None or bounded:
            raise UserError("--ratio sets the channels removed directly: give it without "
                            "--target_ratio, --max_output_error or --min_agreement")
        if not 0 < args.ratio < 1:
            raise UserError(f"--ratio must be in (0, 1) (the fraction of every selected group's "
                            f"channels to remove), got {args.ratio:g}")
        return PruneRequest(pruned_params if pruned_params is not None else "auto", None,
                            _checked_criterion(criterion), source, float(args.ratio))
    if target_ratio is None and bounded:  # searched; the largest cut tried is the default
        return PruneRequest(pruned_params if pruned_params is not None else "auto", None,
                            _checked_criterion(criterion), source)
    if target_ratio is None:
        raise UserError("give --target_ratio R (the fraction of the FLOPs to remove, in (0, 1)), "
                        f"--ratio R, or -s SLIM.yaml with a {STRATEGY_CLASS} entry")
    if not 0 < target_ratio < 1:
        raise UserError(f"--target_ratio must be in (0, 1) (the fraction of the FLOPs to "
                        f"remove), got {target_ratio:g}")
    return PruneRequest(pruned_params if pruned_params is not None else "auto",
                        float(target_ratio), _checked_criterion(criterion), source)


def latency_target(args, from_config=None):
    """The LatencyTarget of the command line (over -s's, `from_config`), or None; one-line
    errors for a bad or incomplete one."""
    from slim.prune.latency import DEFAULT_RUNTIME, LatencyTarget
    ratio = getattr(args, "target_latency_ratio", None)
    ms = getattr(args, "target_latency_ms", None)
    if ratio is None and ms is None:
        if from_config is None:
            if getattr(args, "latency_table", None) or getattr(args, "runtime", None):
                raise UserError("--latency_table / --runtime go with a latency target: give "
                                "--target_latency_ratio R or --target_latency_ms MS")
            return None
        ratio, ms = from_config.ratio, from_config.ms
    table = getattr(args, "latency_table", None) or (from_config.table if from_config else None)
    if not table:
        raise UserError("a latency target needs --latency_table T.json (measure one with "
                        "`python -m slim latency-table --model_dir DIR --out T.json`)")
    runtime = getattr(args, "runtime", None) or \
        (from_config.runtime if from_config else DEFAULT_RUNTIME)
    threads = args.threads if getattr(args, "threads", None) else 1
    return LatencyTarget(table, runtime, threads, ratio, ms).check("--target_latency")


def _checked_criterion(criterion):
    from slim.prune import CRITERIA
    criterion = criterion or DEFAULT_CRITERION
    if criterion not in CRITERIA:
        raise UserError(f"--criterion '{shorten(criterion, 60)}' is not a pruning criterion; "
                        f"known: {', '.join(sorted(CRITERIA.names()))}")
    return criterion


def slim_config_options(slim_file, strategy=None):
    """(pruned_params, target_ratio, criterion, latency target or None) of the slim config's
    UniformPruneStrategy entry (`strategy` names it when there are several)."""
    from slim.config import load_slim_config
    from slim.strategies.uniform_prune import latency_target_of, pruner_criterion
    slim_config = load_slim_config(slim_file)
    entries = {name: options for name, options in slim_config.strategies.items()
               if type(options).__name__ == STRATEGY_CLASS}
    if not entries:
        raise UserError(f"{slim_file}: no strategy of class {STRATEGY_CLASS}; add one "
                        "(pruned_params, target_ratio, pruner) or give --target_ratio")
    if strategy is None and len(entries) > 1:
        raise UserError(f"{slim_file}: {len(entries)} {STRATEGY_CLASS} entries "
                        f"({', '.join(entries)}); choose one with --strategy NAME")
    name = strategy or next(iter(entries))
    if name not in entries:
        raise UserError(f"{slim_file}: --strategy '{shorten(name, 60)}' is not a "
                        f"{STRATEGY_CLASS} entry; entries: {', '.join(entries)}")
    options = entries[name]
    criterion = pruner_criterion(name, options.pruner, slim_config.pruners[options.pruner])
    return options.pruned_params, float(options.target_ratio), criterion, \
        latency_target_of(options)


def measure_latency(files, pruned_files, feeds, runs, threads):
    """Load both models in Paddle Inference, check their outputs have the same shapes, and
    time them interleaved (`runs` pairs after WARMUP_RUNS each; `slim.io.latency`): the
    timing summary with its verdict. None when runs is 0 (nothing is run)."""
    import paddle.inference as paddle_infer
    if runs == 0:
        return None
    configs = {"before": inference_config(files, threads),
               "after": inference_config(pruned_files, threads)}
    try:
        predictors = {name: paddle_infer.create_predictor(config)
                      for name, config in configs.items()}
        outputs = {name: run_predictor(predictor, feeds) for name, predictor in predictors.items()}
    except Exception as error:  # noqa: BLE001 - Paddle raises many types; reported in one line
        raise UserError(f"Paddle Inference cannot run '{shorten(files.model_path)}' on random "
                        f"inputs of shapes {({k: list(v.shape) for k, v in feeds.items()})}: "
                        f"{first_line(error)} (measure no latency with --latency_runs 0)") from None
    # axis 0 may differ: the batch, or how many boxes a detector's NMS kept (the pruned
    # model finds other boxes); a pruned fetch target shows on the other axes
    shapes = {name: [list(array.shape) for array in arrays] for name, arrays in outputs.items()}
    if ([[len(shape), *shape[1:]] for shape in shapes["before"]]
            != [[len(shape), *shape[1:]] for shape in shapes["after"]]):
        raise RuntimeError(f"the pruned model's outputs {shapes['after']} differ in shape from "
                           f"the model's {shapes['before']}: the fetch targets were pruned")
    timings = interleaved_timings({name: (lambda feed, p=predictor: run_predictor(p, feed))
                                   for name, predictor in predictors.items()},
                                  [feeds], runs, warmup=WARMUP_RUNS)
    return {"runs": runs, "warmup": WARMUP_RUNS, "threads": threads,
            "onednn": bool(configs["before"].mkldnn_enabled()),
            **pair_summary(timings["before"], timings["after"], ("before_", "after_")),
            "before_ms": [round(ms, 3) for ms in timings["before"]],
            "after_ms": [round(ms, 3) for ms in timings["after"]]}


def moved_groups(plan, round_to):
    """How many groups of `plan` keep another count than its uniform ratio gives: the ones
    the FLOPs-target search moved by single steps."""
    from slim.prune.pruner import keep_count
    if plan.ratio is None:
        return 0
    return sum(group.channels_after != keep_count(group.channels_before, plan.ratio, round_to)
               for group in plan.groups)


def measure_on_runtime(files, pruned_files, feeds, runs, runtime, threads):
    """The models timed interleaved on `runtime` (as `python -m slim latency-table` times
    them: the run call only), after WARMUP_RUNS each; the timing summary (None: runs 0)."""
    from slim.workflow.latency_table import load_average, timed_run
    if runs == 0:
        return None
    timed = {"before": timed_run(runtime, files, feeds, threads),
             "after": timed_run(runtime, pruned_files, feeds, threads)}
    load = load_average()
    timings = interleaved_timings(timed, [None], runs, warmup=WARMUP_RUNS)
    return {"runs": runs, "warmup": WARMUP_RUNS, "threads": threads, "runtime": runtime,
            "onednn": runtime == "paddle-onednn", "load_average": [load, load_average()],
            **pair_summary(timings["before"], timings["after"], ("before_", "after_")),
            "before_ms": [round(ms, 3) for ms in timings["before"]],
            "after_ms": [round(ms, 3) for ms in timings["after"]]}


def build_report(args, request, files, model, shapes, plan, before, after, latency, written,
                 plan_seconds, seconds):
    """The JSON-ready report of one prune."""
    import paddle

    def ratio(key):
        return after[key] / before[key] if before[key] else None
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "model_dir": args.model_dir, "model_filename": files.model_filename,
        "params_filename": files.params_filename, "out": args.out, "files": written,
        "feeds": shapes, "fetches": [var.name for var in model.fetch_vars],
        "options_from": request.source, "pruned_params": request.pruned_params,
        "target_ratio": request.target_ratio, "criterion": request.criterion,
        "round_to": args.round_to,
        "ratio": plan.ratio, "matched": len(plan.matched), "groups": len(plan.groups),
        "groups_moved": moved_groups(plan, args.round_to),
        "unprunable": dict(plan.skipped),
        "before": before, "after": after,
        "flops_ratio": ratio("flops"), "flops_removed": 1.0 - ratio("flops"),
        "params_ratio": ratio("params"), "size_ratio": ratio("size_bytes"),
        "latency": latency,
        "plan_seconds": round(plan_seconds, 2), "seconds": round(seconds, 2),
        "machine": machine_info(paddle=paddle.__version__),
    }


def _human(number):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.3f}{unit}"
    return str(number)


def _moved_text(report):
    """' (N groups moved ...)' when the FLOPs-target search moved single groups."""
    moved = report.get("groups_moved")
    return f" ({moved} group{'s' if moved > 1 else ''} moved by single steps)" if moved else ""


def _target_text(report):
    """How the amount was chosen, for the report's first line ('' for --ratio)."""
    if report["target_ratio"] is not None:
        return f"target -{100 * report['target_ratio']:g}% FLOPs "
    if report.get("search"):
        return f"searched within the bound: -{100 * report['flops_removed']:.1f}% FLOPs "
    return ""


def format_report(report):
    """The report as a short table: FLOPs, params, size and latency before and after."""
    before, after = report["before"], report["after"]
    rows = [("", "before", "after", "change"),
            ("FLOPs (multiply-adds)", _human(before["flops"]), _human(after["flops"]),
             f"{100 * (report['flops_ratio'] - 1):+.1f}%"),
            ("params", _human(before["params"]), _human(after["params"]),
             f"{100 * (report['params_ratio'] - 1):+.1f}%"),
            ("size on disk (MB)", f"{before['size_bytes'] / 1e6:.2f}",
             f"{after['size_bytes'] / 1e6:.2f}", f"{100 * (report['size_ratio'] - 1):+.1f}%")]
    latency = report["latency"]
    if latency:
        rows.append((f"latency ms (median, {latency['threads']} thread"
                     f"{'s' if latency['threads'] > 1 else ''}"
                     f"{', oneDNN' if latency.get('onednn') else ''}"
                     f"{', ' + latency['runtime'] if latency.get('runtime') else ''})",
                     f"{latency['before_median_ms']:.2f}", f"{latency['after_median_ms']:.2f}",
                     speedup_text(latency)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    predicted = report.get("latency_target")
    if predicted:
        how = (f"per-group counts for {predicted['target_ms']:.2f} ms predicted on "
               f"{predicted['runtime']} ({predicted['threads']} thread(s)), "
               f"{report['criterion']} ")
    else:
        how = (f"by ratio {report['ratio']:.4f}{_moved_text(report)}, {report['criterion']}, "
               f"{_target_text(report)}")
    lines = [f"pruned {report['model_dir']} -> {report['out']}: {report['matched']} conv weights "
             f"({report['groups']} channel groups) {how}"
             f"(feeds {', '.join(f'{k} {v}' for k, v in report['feeds'].items())})"]
    for row in rows:
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                     f"{row[3]}")
    if predicted:
        measured = (f"measured {latency['before_median_ms']:.2f} -> {latency['after_median_ms']:.2f}"
                    f" ms ({speedup_text(latency)})") if latency else "not measured"
        lines.append(f"latency on {predicted['runtime']}: predicted "
                     f"{predicted['predicted_before_ms']:.2f} -> {predicted['predicted_after_ms']:.2f}"
                     f" ms ({predicted['predicted_speedup']:.2f}x; target "
                     f"{predicted['target_ms']:.2f} ms), {measured}")
    if latency:
        lines.append(f"latency: {latency.get('runtime', 'Paddle Inference CPU')}, "
                     f"{latency['pairs']} interleaved "
                     f"pairs after {latency['warmup']} warm-up runs; speed-up = median of "
                     f"per-pair ratios (p10 {latency['speedup_p10']:.2f}x, "
                     f"p90 {latency['speedup_p90']:.2f}x; when they straddle 1: no "
                     "significant change)")
    else:
        lines.append("latency: not measured (--latency_runs 0)")
    lines.append(f"wrote {os.path.join(report['out'], PLAN_NAME)}, "
                 f"{os.path.join(report['out'], REPORT_NAME)} and the pruned model "
                 f"({', '.join(report['files'][:2])}{' ...' if len(report['files']) > 2 else ''})")
    return "\n".join(lines)
