#!/usr/bin/env python
"""Score a saved eval model on a dataset: VOC or COCO mAP per the config's `metric`.

    python eval.py --model_path checkpoints/9/eval_model/ --model_name __model__ \
        --params_name __params__ -c configs/yolov3_mobilenet_v1_voc.yml -d dataset/voc
"""
import slim  # noqa: F401  (classic static IR before paddle)
from slim.commands.cli import add_config_arguments, new_parser
from slim.errors import exit_on_user_error


def parse_args(argv=None):
    parser = new_parser(__doc__.splitlines()[0], prog="python eval.py")
    parser.add_argument("-m", "--model_path", required=True, help="directory of the saved model")
    parser.add_argument("--model_name", default="model", help="program file in model_path")
    parser.add_argument("--params_name", default="params", help="combined params file in model_path")
    add_config_arguments(parser)
    parser.add_argument("--output_eval", default=None,
                        help="directory for the metric JSON (and COCO detection JSON)")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from slim.commands.evaluate import run_eval
    return run_eval(parse_args(argv))


if __name__ == "__main__":
    main()
