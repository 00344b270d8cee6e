"""What a plan does to a program: FLOPs, params, channels per group and per layer.

`plan_summary` returns a JSON-ready dict (the keys `python -m slim inspect -s`
prints): flops_before, flops_after, params_before, params_after, matched,
ratio, groups [{params, channels_before, channels_after, ...}], plus layers
(every conv's channels before and after). `format_summary` renders it as a
table; `plot_channels` draws channels per layer before vs after.
"""
from slim.prune.apply import pruned_shapes
from slim.prune.flops import program_flops, program_params
from slim.prune.graph import analyze_program
from slim.prune.plan import PrunePlan


def plan_summary(plan, program, graph=None, per_group_flops=True, extra_ops=None):
    """Summary of `plan` applied to `program` (a program with static image shape, e.g. the
    eval program, so FLOPs can be counted). The program is left unchanged. `extra_ops`:
    {op type: OpSpec} added to the op specs for this call (see `slim.prune.op_specs`).

    Per group, `flops_removed` is what pruning that group alone removes.
    """
    graph = graph or analyze_program(program, extra_ops=extra_ops)
    flops_before, params_before = program_flops(program, extra_ops=extra_ops), program_params(program)
    layers_before = _conv_channels(graph)
    with pruned_shapes(plan, program, graph):
        flops_after, params_after = program_flops(program, extra_ops=extra_ops), program_params(program)
        layers_after = _conv_channels(graph)
    groups = []
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        entry = {"params": list(group_plan.params),
                 "filters": group.filter_params if group is not None else [],
                 "channels_before": group_plan.channels_before,
                 "channels_after": group_plan.channels_after,
                 "key": list(group_plan.key)}
        if per_group_flops:
            alone = PrunePlan([group_plan], plan.criterion)
            with pruned_shapes(alone, program, graph):
                entry["flops_removed"] = flops_before - program_flops(program, extra_ops=extra_ops)
        groups.append(entry)
    layers = [{"name": name, "kind": kind, "channels_before": before,
               "channels_after": layers_after[name][1]}
              for name, (kind, before) in layers_before.items()]
    return {"flops_before": int(flops_before), "flops_after": int(flops_after),
            "params_before": int(params_before), "params_after": int(params_after),
            "matched": list(plan.matched), "ratio": plan.ratio,
            "target_ratio": plan.target_ratio, "criterion": plan.criterion,
            "groups": groups, "unprunable": dict(plan.skipped), "layers": layers}


def _conv_channels(graph):
    """{conv weight: (kind, output channels)} in program order."""
    result = {}
    for conv in graph.convs:
        shape = graph.program.global_block().var(conv.weight).shape
        result[conv.weight] = (conv.kind, int(shape[conv.output_axis]))
    return result


def _human(number):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.3f}{unit}"
    return str(number)


def _percent_change(before, after):
    return 0.0 if not before else 100.0 * (after - before) / before


def format_summary(summary):
    """The summary as a text table: one row per group (its producing conv weights, then a
    count of its other params), then totals."""
    rows = [("#", "channels", "FLOPs -%", "params")]
    before = summary["flops_before"]
    for number, group in enumerate(summary["groups"], 1):
        names = group["params"]
        shown = group.get("filters") or names[:1]
        rest = len(names) - len(shown)
        removed = group.get("flops_removed")
        rows.append((str(number),
                     f"{group['channels_before']} -> {group['channels_after']}",
                     "" if removed is None else f"{100.0 * removed / before:.2f}" if before else "",
                     ", ".join(shown) + (f" (+{rest})" if rest > 0 else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
             for row in rows]
    ratio = summary.get("ratio")
    lines.append(
        f"FLOPs {_human(summary['flops_before'])} -> {_human(summary['flops_after'])} "
        f"({_percent_change(summary['flops_before'], summary['flops_after']):+.2f}%), "
        f"params {_human(summary['params_before'])} -> {_human(summary['params_after'])} "
        f"({_percent_change(summary['params_before'], summary['params_after']):+.2f}%), "
        f"{len(summary['matched'])} params matched, {len(summary['groups'])} groups"
        + (f", uniform ratio {ratio:.4f}" if ratio is not None else ""))
    for name, reason in summary.get("unprunable", {}).items():
        lines.append(f"not prunable: {name}: {reason}")
    return "\n".join(lines)


def plot_channels(summary, path, title=None):
    """Bar chart of output channels per conv layer, before vs after, written to `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = summary["layers"]
    names = [layer["name"] for layer in layers]
    positions = range(len(layers))
    figure, axes = plt.subplots(figsize=(max(8.0, 0.22 * len(layers) + 2), 5.0))
    axes.bar(positions, [layer["channels_before"] for layer in layers], color="#c8d6e5",
             label="before")
    axes.bar(positions, [layer["channels_after"] for layer in layers], color="#2e86de",
             width=0.6, label="after")
    axes.set_xticks(list(positions))
    axes.set_xticklabels(names, rotation=90, fontsize=6)
    axes.set_ylabel("output channels")
    change = _percent_change(summary["flops_before"], summary["flops_after"])
    axes.set_title(title or f"channels per conv layer (FLOPs {change:+.1f}%)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
