"""The calibration-image options of `python -m slim prune` and the steps they add.

    --images DIR|LIST [--num_images N] [--held_out K] [--preprocess KEY=VALUE ...]
    [--task auto|classify|sequence|dense|detect] [--threshold T]
    [--criterion activation|taylor] [--max_output_error E | --min_agreement A]
    [--reconstruct] [--recover_iters N --recover_lr LR --batch_size B
     --checkpoint_dir DIR --checkpoint_every K]

The work is in slim.sourcefree; this module turns options into its calls and its results
into report entries and printed tables.
"""
import sys

from slim.errors import UserError
from slim.io.output_places import check_output_dir
from slim.prune.criteria import DATA_CRITERIA
from slim.sourcefree.fidelity import TASKS, format_fidelity, poor_fidelity_warning
from slim.sourcefree.recover import DEFAULT_BATCH, DEFAULT_LR
from slim.sourcefree.session import (
    DEFAULT_NUM_IMAGES,
    SourceFreeOptions,
    SourceFreeSession,
    search_largest_cut,
)


def add_arguments(parser):
    """The calibration-image options of `prune`."""
    group = parser.add_argument_group("calibration images (source-free pruning)")
    group.add_argument("--images", default=None, metavar="DIR|LIST",
                       help="unlabeled images: a directory or a list file (one path a line); "
                            "enables the fidelity report, --criterion activation|taylor, "
                            "--reconstruct and --recover_iters")
    group.add_argument("--num_images", type=int, default=DEFAULT_NUM_IMAGES, metavar="N",
                       help=f"images used in all, held-out ones included (default "
                            f"{DEFAULT_NUM_IMAGES})")
    group.add_argument("--held_out", type=int, default=None, metavar="K",
                       help="images kept for the fidelity report only (default 20%%)")
    group.add_argument("--preprocess", nargs="+", default=(), metavar="KEY=VALUE",
                       help="size=H,W fit=stretch|pad multiple=M max_side=S mean=a,b,c "
                            "std=a,b,c scale=F order=rgb|bgr (over the model dir's "
                            "infer_cfg.yml when there is one)")
    group.add_argument("--task", choices=TASKS, default="auto",
                       help="how agreement is measured: top-1 (classify), identical CTC "
                            "sequences (sequence), IoU of thresholded maps (dense), boxes "
                            "recalled at IoU 0.5 (detect); auto guesses from the output shape")
    group.add_argument("--threshold", type=float, default=None, metavar="T",
                       help="dense map / box score threshold (default 0.3 / 0.5)")
    bound = group.add_mutually_exclusive_group()
    bound.add_argument("--max_output_error", type=float, default=None, metavar="E",
                       help="prune the largest FLOPs cut whose relative L2 output error on "
                            "calibration images stays <= E")
    bound.add_argument("--min_agreement", type=float, default=None, metavar="A",
                       help="prune the largest FLOPs cut whose task agreement on calibration "
                            "images stays >= A")
    group.add_argument("--reconstruct", action="store_true",
                       help="refit the convs / fcs that read pruned channels by least squares")
    group.add_argument("--recover_iters", type=int, default=0, metavar="N",
                       help="distillation iterations from the unpruned model (default 0)")
    group.add_argument("--recover_lr", type=float, default=DEFAULT_LR, metavar="LR",
                       help=f"Adam learning rate of the recovery (default {DEFAULT_LR:g})")
    group.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, metavar="B",
                       help=f"images per recovery step (default {DEFAULT_BATCH})")
    group.add_argument("--checkpoint_dir", default=None, metavar="DIR",
                       help="recovery checkpoints; a rerun with the same DIR resumes")
    group.add_argument("--checkpoint_every", type=int, default=50, metavar="K",
                       help="recovery iterations between checkpoints (default 50)")
    return parser


def wants_images(args):
    """UserError when an option needs --images and it is missing; True with --images."""
    needing = [name for name, given in (
        ("--criterion " + str(args.criterion), args.criterion in DATA_CRITERIA),
        ("--reconstruct", args.reconstruct), ("--recover_iters", args.recover_iters > 0),
        ("--max_output_error", args.max_output_error is not None),
        ("--min_agreement", args.min_agreement is not None)) if given]
    if needing and not args.images:
        raise UserError(f"{needing[0]} needs calibration images: give --images DIR (a "
                        "directory of images or a list file)")
    if args.max_output_error is not None and not args.max_output_error > 0:
        raise UserError(f"--max_output_error must be > 0, got {args.max_output_error:g}")
    if args.min_agreement is not None and not 0 < args.min_agreement <= 1:
        raise UserError(f"--min_agreement must be in (0, 1], got {args.min_agreement:g}")
    return bool(args.images)


def open_session(args, files, model, executor, inputs=()):
    """The SourceFreeSession of the options (checkpoint dir checked first)."""
    if args.checkpoint_dir:
        check_output_dir(args.checkpoint_dir, "--checkpoint_dir", inputs=inputs)
    options = SourceFreeOptions(
        images=args.images, num_images=args.num_images, held_out=args.held_out,
        preprocess=tuple(args.preprocess or ()), task=args.task, threshold=args.threshold,
        batch_size=args.batch_size, recover_iters=args.recover_iters, recover_lr=args.recover_lr,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every)
    return SourceFreeSession(files, model, executor, options)


def bounded_target(args, session, trial, high=None):
    """The largest uniform ratio within --max_output_error / --min_agreement (trial(ratio) ->
    fidelity report on the search images with `flops_removed`, the model restored after;
    `high`: the ratio of --target_ratio, the largest tried), and the steps tried."""
    def evaluate(ratio):
        report = trial(ratio)
        detail = {"flops_removed": report["flops_removed"]}
        if args.max_output_error is not None:
            value = report["relative_l2"]
            return value is not None and value <= args.max_output_error, \
                {**detail, "relative_l2": value}
        value = report["agreement"]
        if value is None:
            raise UserError("--min_agreement needs a task agreement: give --task "
                            "classify|sequence|dense|detect (the outputs' kind is not known)")
        return value >= args.min_agreement, {**detail, "agreement": value}
    best, tried = search_largest_cut(evaluate, **({"high": high} if high else {}),
                                     log=lambda message: print(message, file=sys.stderr))
    chosen = next((step for step in tried if step["ratio"] == best), None)
    if best is None or not chosen["flops_removed"] > 0:  # removing nothing is no cut
        best = None
    if best is None:
        bound = (f"--max_output_error {args.max_output_error:g}" if args.max_output_error
                 is not None else f"--min_agreement {args.min_agreement:g}")
        raise UserError(f"no FLOPs cut down to -{100 * tried[-1]['flops_removed']:.1f}% stays "
                        f"within {bound} on {len(session.search_samples())} calibration "
                        "images; loosen the bound or use --criterion activation")
    return best, tried


def print_fidelity(stage, report, out):
    """Print the fidelity table of one stage and, when it is poor, one warning line."""
    print(format_fidelity(report, f"fidelity ({stage}) on {report_images(report)} held-out "
                                  "images vs the unpruned model:"), file=out)
    warning = poor_fidelity_warning(report, f"the {stage} model")
    if warning:
        print(warning, file=sys.stderr)


def report_images(report):
    return max((r["images"] for r in report["outputs"].values()), default=0)
