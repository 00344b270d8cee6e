"""`python -m slim SUBCOMMAND ...`: the package's command line.

Subcommands are listed in SUBCOMMANDS (name -> module in slim.commands). A
subcommand module provides `add_arguments(parser)` and `run(args)`; adding one
is one new module plus one line here.
"""
import argparse
import importlib
import sys

import slim  # noqa: F401  (selects the classic static IR before paddle is imported)
from slim.errors import ArgumentParser, exit_on_user_error

SUBCOMMANDS = {
    "inspect": "slim.commands.inspect",
    "pretrain": "slim.commands.pretrain",
    "demo": "slim.commands.demo",
    "sensitivity": "slim.commands.sensitivity",
    "export": "slim.commands.export",
    "prune": "slim.commands.prune",
    "anchors": "slim.commands.anchors",
    "latency-table": "slim.commands.latency_table",
}


def build_parser():
    """The `python -m slim` parser with one sub-parser per subcommand."""
    parser = ArgumentParser(prog="python -m slim",
                                     description="filter pruning toolkit for Paddle detectors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        subparser = subparsers.add_parser(name, help=summary, description=module.__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


@exit_on_user_error
def main(argv=None):
    """Parse `argv` and run the chosen subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    import paddle
    paddle.enable_static()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
