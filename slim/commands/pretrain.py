"""Pretrain the backbone as an object classifier on crops of a detection training set.

    python -m slim pretrain -c configs/yolov3_mobilenet_v1_demo.yml --out output/demo/pretrained_backbone
        [--epochs 8] [--size 64] [--batch_size 32] [--lr 0.05] [-o KEY=VALUE ...]

Example (one epoch on the demo dataset's crops):
    python -m slim pretrain -c configs/yolov3_mobilenet_v1_demo.yml --out output/pretrained_backbone \\
        --epochs 1

The published recipe starts the detector from an ImageNet-trained backbone.
A CPU demo has none, so this does the same job on the detection data itself:
every training object is cropped (square, with a random margin and shift) and
labelled with its class, random background patches that overlap no object by
more than 30% get an extra "background" label, and the backbone of the
config's model (same parameter names and widths) plus a global-average-pool
and fully connected layer learns to tell them apart. The backbone's weights
(conv and batch norm, not the classifier layer) are written as a weights
directory that the detection config's `pretrain_weights` loads.
"""
import math
import sys

from slim.commands.cli import add_override_argument, parse_command_args
from slim.errors import Interrupted, UserError, exit_on_user_error, shorten, stop_on_sigterm
from slim.runs.pretrain import pretrain_backbone


def add_arguments(parser):
    """pretrain's flags (`python -m slim pretrain`)."""
    parser.add_argument("-c", "--config", required=True, help="detection config")
    parser.add_argument("--out", required=True, help="weights directory to write")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="Momentum LR (cosine decay)")
    add_override_argument(parser, "detection config overrides")


def parse_args(argv=None):
    return parse_command_args(__doc__, add_arguments, argv, prog="python -m slim pretrain")


@exit_on_user_error
def main(argv=None):
    """`python -m slim pretrain ARGS` in-process; exit code."""
    return run(parse_args(argv))


def run(args):
    """Pretrain as `args` say; 0."""
    import paddle

    from slim.config import load_config
    stop_on_sigterm()  # again: paddle's import installed its own handler
    if args.epochs < 1 or args.size < 32 or args.size % 32 or args.batch_size < 2:
        raise UserError("--epochs must be >= 1, --size a multiple of 32 (>= 32), "
                        "--batch_size >= 2")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise UserError(f"--lr {args.lr} must be a finite number > 0")
    paddle.enable_static()
    cfg = load_config(args.config, args.opt)
    try:
        pretrain_backbone(cfg, args.out, args.epochs, args.size, args.batch_size, args.lr,
                          log=lambda message: print(message, flush=True), inputs=[args.config])
    except KeyboardInterrupt:
        raise Interrupted(f"pretraining stopped before its weights were written; --out "
                          f"'{shorten(args.out)}' is unchanged") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
