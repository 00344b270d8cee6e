"""Filter pruning of classic static programs, dependency-aware.

    from slim.prune import analyze_program, plan_pruning, apply_plan, plan_summary

    plan = plan_pruning(train_program, scope, "auto", target_ratio=0.5,
                        flops_program=eval_program)      # decide (nothing changes)
    undo = apply_plan(plan, [train_program, eval_program], scope)  # prune all
    undo.restore()                                       # and back, if wanted

Modules: `op_specs` (one entry per op type: its channel rule from `ops`, attribute
fixer from `op_attrs`, FLOPs counter from `op_flops`, kind), `graph` (channel groups over a
program), `criteria` (l1_norm, fpgm, bn_scale), `pruner` (selection, ratios,
FLOPs-target search, planning), `plan` (the JSON-serializable plan), `apply`
(rewrite programs + scope, undo), `report` (table, JSON, chart), `flops`
(FLOPs and params of a program).
"""
from slim.prune.apply import PruneUndo, apply_plan, pruned_shapes
from slim.prune.criteria import CRITERIA, register_criterion
from slim.prune.errors import PruneError
from slim.prune.graph import ChannelGraph, ChannelGroup, analyze_program
from slim.prune.op_specs import OP_SPECS, OpSpec, register_op
from slim.prune.plan import GroupPlan, PrunePlan
from slim.prune.pruner import AUTO, PruneWarning, plan_pruning, search_uniform_ratio, select_params
from slim.prune.report import format_summary, plan_summary, plot_channels

__all__ = [
    "AUTO", "CRITERIA", "OP_SPECS", "ChannelGraph", "ChannelGroup", "GroupPlan", "OpSpec", "PruneError",
    "PrunePlan", "PruneUndo", "PruneWarning", "analyze_program", "apply_plan", "format_summary",
    "plan_pruning", "plan_summary", "plot_channels", "pruned_shapes", "register_criterion",
    "register_op", "search_uniform_ratio", "select_params",
]
