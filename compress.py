#!/usr/bin/env python
"""Prune a detector to a FLOPs target and fine-tune it (the seed's compress.py).

    python compress.py -s configs/yolov3_mobilenet_v1_slim.yaml \
        -c configs/yolov3_mobilenet_v1_voc.yml -o max_iters=258 YoloTrainFeed.batch_size=64 \
        -d dataset/voc
"""
import slim  # noqa: F401  (classic static IR before paddle)
from slim.commands.cli import add_config_arguments, add_scale_lr_argument, new_parser
from slim.errors import exit_on_user_error


def parse_args(argv=None):
    parser = new_parser(__doc__.splitlines()[0], prog="python compress.py")
    parser.add_argument("-s", "--slim_file", required=True,
                        help="slim config YAML (pruners, strategies, compressor)")
    add_config_arguments(parser)
    parser.add_argument("--output_eval", default=None,
                        help="directory for evaluation results: eval_result.json (latest eval), "
                             "compress_summary.json, and bbox.json for COCO")
    add_scale_lr_argument(parser)
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from slim.commands.compress import run_compress
    return run_compress(parse_args(argv))


if __name__ == "__main__":
    main()
