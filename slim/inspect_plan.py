"""The pruning plan of a slim config, without training: `python -m slim inspect -s SLIM`.

    python -m slim inspect -c configs/yolov3_mobilenet_v1_voc.yml \\
        -s configs/yolov3_mobilenet_v1_slim.yaml [--json] [--chart channels.png]

Builds the eval program at the eval feed's image shape, runs the slim
config's UniformPruneStrategy entries in `compressor.strategies` order (each
planned on the program the previous ones pruned), and reports FLOPs and
params before and after, the matched params, the uniform ratio found and the
channels of every pruned group. The weights are the initial ones (no
training, no checkpoint): the FLOPs, ratios and channel counts do not depend
on them; which channels l1_norm keeps does.
"""
import json
import sys

from slim.errors import ConfigError, UserError


def add_plan_arguments(parser):
    """The options `inspect` gains for planning (-s and --chart)."""
    parser.add_argument("-s", "--slim_file", default=None, metavar="SLIM.yaml",
                        help="plan the slim config's pruning without training: FLOPs and params "
                             "before/after, matched params, the ratio found, channels per group")
    parser.add_argument("--chart", default=None, metavar="FILE.png",
                        help="with -s: draw output channels per conv layer, before vs after")
    return parser


def plan_slim_config(eval_program, scope, slim_config):
    """Plan and apply, in order, every UniformPruneStrategy of `slim_config` on
    `eval_program` and `scope` (both are pruned in place). Returns the plan report:
    flops_before, flops_after, params_before, params_after, matched, ratio, groups,
    layers, and per strategy its name, ratio and FLOPs."""
    from slim.prune.apply import apply_plan
    from slim.prune.graph import analyze_program
    from slim.prune.pruner import plan_pruning
    from slim.prune.report import plan_summary
    from slim.strategies.uniform_prune import pruner_criterion
    summaries = []
    for name, options in slim_config.active_strategies():
        class_name = type(options).__name__
        if class_name != "UniformPruneStrategy":
            raise ConfigError(f"{slim_config.path}: strategy '{name}' is a {class_name}; "
                              "inspect -s plans UniformPruneStrategy strategies only")
        criterion = pruner_criterion(name, options.pruner, slim_config.pruners[options.pruner])
        graph = analyze_program(eval_program)
        plan = plan_pruning(eval_program, scope, options.pruned_params, graph=graph,
                            target_ratio=options.target_ratio, criterion=criterion)
        summary = plan_summary(plan, eval_program, graph)
        summary["strategy"] = name
        summaries.append(summary)
        apply_plan(plan, [eval_program], scope, graphs=[graph])
    if not summaries:
        raise ConfigError(f"{slim_config.path}: compressor.strategies lists no strategy to plan")
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


def run_plan_inspect(args, out=None):
    """`inspect -s`: print the plan of args.slim_file over args.config (table or --json);
    --chart writes the channels chart. The programs and scope are built here and dropped."""
    import paddle

    from slim.config import load_slim_config
    from slim.model import build_eval_program
    from slim.model.from_config import model_from_config
    from slim.prune.report import format_summary, plot_channels
    out = out or sys.stdout
    slim_config = load_slim_config(args.slim_file)
    model, image_shape = model_from_config(args.config, args.opt, args.image_shape)
    evaluation = build_eval_program(model, image_shape=list(image_shape))
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.seed(0)
        paddle.static.Executor(paddle.CPUPlace()).run(evaluation.startup)
        summary = plan_slim_config(evaluation.program, scope, slim_config)
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
