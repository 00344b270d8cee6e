"""Argument helpers shared by compress.py, eval.py and infer.py (flags as FACTS.md §4)."""
import argparse

from slim.errors import ArgumentParser
from slim.runs.job import RECIPE_TOTAL_BATCH


def add_config_arguments(parser, with_dataset_dir=True, config_help=None):
    """-c/--config, -o/--opt key=value ..., and -d/--dataset_dir, as the seed's tools had them.
    With `config_help` the config is optional and described by it."""
    parser.add_argument("-c", "--config", required=config_help is None,
                        help=config_help or
                        "detection config YAML, e.g. configs/yolov3_mobilenet_v1_voc.yml")
    add_override_argument(parser, "override config options: dotted keys, YAML values, e.g. "
                                  "YoloTrainFeed.batch_size=64 max_iters=258")
    if with_dataset_dir:
        parser.add_argument("-d", "--dataset_dir", default=None,
                            help="dataset root; replaces dataset_dir of every feed")


def add_override_argument(parser, help_text):
    """-o/--opt KEY=VALUE ...; a repeated -o adds to the earlier ones (argparse's plain
    nargs='*' would silently keep only the last)."""
    parser.add_argument("-o", "--opt", nargs="*", action="extend", default=[],
                        metavar="KEY=VALUE", help=help_text)


def new_parser(description, prog=None):
    """An ArgumentParser whose usage errors are one `error:` line, exit 2
    (`slim.errors.ArgumentParser`); `prog` is how the command is run, e.g. 'python train.py'
    (what its error lines tell to run with --help)."""
    return ArgumentParser(prog=prog, description=description,
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_scale_lr_argument(parser):
    """--scale_lr [RECIPE_TOTAL_BATCH]: rescale the LR schedule to this run's total batch."""
    parser.add_argument("--scale_lr", type=int, nargs="?", const=RECIPE_TOTAL_BATCH, default=None,
                        metavar="RECIPE_TOTAL_BATCH",
                        help="rescale LearningRate.base_lr (linearly), PiecewiseDecay milestones "
                             "and LinearWarmup steps from the total batch the recipe was tuned "
                             f"for (default {RECIPE_TOTAL_BATCH}: 8 cards x 8 images) to this run's "
                             "total batch (YoloTrainFeed.batch_size x cards)")


def parse_command_args(module_doc, add_arguments, argv=None, prog=None):
    """Parse `argv` with a parser described by the first line of `module_doc` that
    `add_arguments(parser)` fills: how a `python -m slim COMMAND` module parses on its own."""
    parser = new_parser(module_doc.splitlines()[0], prog)
    add_arguments(parser)
    return parser.parse_args(argv)
