"""The pruning plan of a slim config, without training: `python -m slim inspect -s SLIM`.

    python -m slim inspect -c configs/yolov3_mobilenet_v1_voc.yml \\
        -s configs/yolov3_mobilenet_v1_slim.yaml [--json] [--chart channels.png]

Builds the programs as compress.py does (the eval program at the eval feed's
image shape), runs the slim config's strategies themselves as compress.py
runs them before training (validated, then fired in start_epoch order, each
on the program the previous ones pruned), and reports FLOPs and params before
and after, the matched params, the ratio found and the channels of every
pruned group. The weights are the initial ones (no
training, no checkpoint): the FLOPs, ratios and channel counts do not depend
on them; which channels l1_norm keeps does.
"""
import json
import sys

from slim.errors import ConfigError, UserError
from slim.model.from_config import model_of_loaded_config


def add_plan_arguments(parser):
    """The options `inspect` gains for planning (-s and --chart)."""
    parser.add_argument("-s", "--slim_file", default=None, metavar="SLIM.yaml",
                        help="plan the slim config's pruning without training: FLOPs and params "
                             "before/after, matched params, the ratio found, channels per group")
    parser.add_argument("--chart", default=None, metavar="FILE.png",
                        help="with -s: draw output channels per conv layer, before vs after")
    return parser


def plan_slim_config(programs, scope, executor, strategies, slim_config):
    """Run `strategies` (built from `slim_config`) on `programs` (a ProgramSet) and `scope`
    as compress.py does before training: each is validated, then called epoch by epoch
    (as before every epoch of a run, in `compressor.strategies` order) from epoch 0 until
    the last start_epoch has passed and no strategy fires any more (steps of num_steps); both are pruned in
    place. Returns the plan report: flops_before, flops_after, params_before,
    params_after, matched, ratio, groups, layers, and per pruning strategy its name, ratio
    and FLOPs."""
    from slim.prune import PrunePlan
    from slim.prune.report import plan_summary
    from slim.strategies import StrategyContext
    if not strategies:
        raise ConfigError(f"{slim_config.path}: compressor.strategies lists no strategy to plan")
    context = StrategyContext(0, programs, scope, log=lambda message: None, executor=executor)
    for strategy in strategies:
        strategy.validate(context)
    summaries = []
    last_start = max(strategy.start_epoch for strategy in strategies)
    epoch = 0
    while True:  # every epoch up to the last start_epoch, then on while a strategy still fires
        context.epoch = epoch
        fired = False
        for strategy in strategies:
            before = programs.eval.program.clone()
            record = strategy.on_epoch_begin(context)
            if record is not None and "plan" in record:
                summary = plan_summary(PrunePlan.from_dict(record["plan"]), before)
                summary["strategy"] = strategy.name
                summaries.append(summary)
                fired = True
        if epoch >= last_start and not fired:
            break
        epoch += 1
    if not summaries:
        raise ConfigError(f"{slim_config.path}: no strategy of compressor.strategies prunes; "
                          "inspect -s reports pruning plans")
    return _combine(summaries)


def _combine(summaries):
    """One report from the per-strategy reports (the single one, when there is one)."""
    first, last = summaries[0], summaries[-1]
    matched = []
    for summary in summaries:
        matched.extend(name for name in summary["matched"] if name not in matched)
    layers_after = {layer["name"]: layer["channels_after"] for layer in last["layers"]}
    single = len(summaries) == 1
    return {
        "flops_before": first["flops_before"], "flops_after": last["flops_after"],
        "params_before": first["params_before"], "params_after": last["params_after"],
        "matched": matched,
        "ratio": first["ratio"] if single else None,
        "target_ratio": first["target_ratio"] if single else None,
        "criterion": first["criterion"],
        "groups": [group for summary in summaries for group in summary["groups"]],
        "unprunable": {name: reason for summary in summaries
                       for name, reason in summary["unprunable"].items()},
        "layers": [dict(layer, channels_after=layers_after[layer["name"]])
                   for layer in first["layers"]],
        "strategies": [{"name": s["strategy"], "ratio": s["ratio"],
                        "target_ratio": s["target_ratio"], "criterion": s["criterion"],
                        "flops_before": s["flops_before"], "flops_after": s["flops_after"]}
                       for s in summaries],
    }


def programs_from_config(cfg, config_path, image_shape, build_hooks=()):
    """(ProgramSet, scope, executor, image shape) of detection config `cfg` (loaded from
    `config_path`) as compress.py builds them on one CPU (the eval program at the static
    `image_shape`, default the eval feed's), initialised, no weights."""
    import paddle

    from slim.config import create
    from slim.engine.distributed import DistributedEnv
    from slim.engine.programs import ProgramSet
    model, image_shape = model_of_loaded_config(cfg, config_path, image_shape)
    scheduler = create("LearningRate", cfg).scheduler(0)
    programs = ProgramSet(model, list(image_shape), create("OptimizerBuilder", cfg), scheduler,
                          DistributedEnv(), build_hooks=build_hooks)
    programs.startup.random_seed = 0
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(programs.startup, scope=scope)
    return programs, scope, executor, image_shape


def run_plan_inspect(args, out=None):
    """`inspect -s`: run the slim config's strategies on the config's programs (as
    compress.py does before training), print the plan (table or --json); --chart writes
    the channels chart. The programs and scope are built here and dropped."""
    from slim.config import load_config, load_slim_config
    from slim.metrics import resolve_metric_name
    from slim.prune.report import format_summary, plot_channels
    from slim.strategies import build_strategies
    out = out or sys.stdout
    slim_config = load_slim_config(args.slim_file)
    cfg = load_config(args.config, args.opt)
    metric_name = resolve_metric_name(cfg.get("metric", "VOC"))
    strategies = build_strategies(slim_config, metric_name, log=lambda message: None)
    programs, scope, executor, image_shape = programs_from_config(
        cfg, args.config, args.image_shape, build_hooks=strategies)
    summary = plan_slim_config(programs, scope, executor, strategies, slim_config)
    summary["image_shape"] = list(image_shape)
    if args.chart:
        plot_channels(summary, args.chart)
        summary["chart"] = args.chart
    if args.json:
        print(json.dumps(summary, indent=1), file=out)
    else:
        shape = "x".join(map(str, image_shape))
        print(f"pruning plan of {args.slim_file} over {args.config} at input {shape} "
              f"(initial weights; FLOPs are multiply-adds per image):", file=out)
        print(format_summary(summary), file=out)
        if args.chart:
            print(f"chart written: {args.chart}", file=out)
    return 0


def check_plan_arguments(args):
    """--chart needs -s."""
    if getattr(args, "chart", None) and not getattr(args, "slim_file", None):
        raise UserError("--chart draws the channels of a pruning plan: give the slim config "
                        "with -s SLIM.yaml")
