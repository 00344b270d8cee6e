"""Source-free pruning of exported models: no training data, no training code, only images.

    from slim.sourcefree import (CalibrationSet, Preprocess, activation_statistics,
                                 fidelity_report, reconstruct, recover)

    images = CalibrationSet.from_source("photos/", Preprocess.parse(["size=224,224"]),
                                        num_images=64, held_out=16)
    stats = activation_statistics(model, scope, executor, images.calibration, graph)
    plan = plan_pruning(model.program, scope, "auto", target_ratio=0.3,
                        criterion="activation", statistics=stats)
    ...
    report = fidelity_report(teacher_outputs, student_outputs, task="classify")

Modules: `images` (calibration images: listing, preprocessing from infer_cfg.yml or
options, the held-out split, bad images skipped with a count), `statistics` (per-channel
statistics of the channels as their consumers read them: mean |activation| and the
first-order Taylor estimate of the change of the outputs; what the data-aware criteria
of `slim.prune.criteria` read), `fidelity` (pruned vs unpruned outputs: relative L2
error, cosine, task agreement; the warning line), `reconstruct` (least-squares refit of
the convs / fcs reading pruned channels), `recover` (distillation of the pruned program
from the unpruned model's outputs, checkpoints and resume), `search` (the largest FLOPs
cut within an output-error or agreement bound).

Layer: above `prune` and `io` (it prunes exported models and writes checkpoints), below
`engine`; it imports slim.prune, slim.io, errors and registry only.
"""
from slim.sourcefree.fidelity import TASKS, compare_outputs, fidelity_report, format_fidelity
from slim.sourcefree.images import CalibrationSet, Preprocess
from slim.sourcefree.statistics import ChannelStatistics, activation_statistics

__all__ = ["TASKS", "CalibrationSet", "ChannelStatistics", "Preprocess", "activation_statistics",
           "compare_outputs", "fidelity_report", "format_fidelity"]
