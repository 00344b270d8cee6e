#!/usr/bin/env python
"""Draw a saved inference model's detections on images.

    python infer.py --model_path checkpoints/9/eval_model/ --infer_img photo.jpg
    python infer.py --model_path checkpoints/9/eval_model/ --model_name __model__.infer \
        --params_name __params__ -c configs/yolov3_mobilenet_v1_voc.yml --infer_dir demo
"""
import slim  # noqa: F401  (classic static IR before paddle)
from slim.commands.cli import add_config_arguments, new_parser
from slim.errors import exit_on_user_error


def parse_args(argv=None):
    parser = new_parser(__doc__.splitlines()[0], prog="python infer.py")
    parser.add_argument("--model_path", required=True, help="directory of the saved model")
    parser.add_argument("--model_name", default="__model__.infer",
                        help="program file in model_path (an .onnx file: run with onnxruntime)")
    parser.add_argument("--params_name", default="__params__", help="combined params file in model_path")
    add_config_arguments(parser, with_dataset_dir=False, config_help=(
        "detection config YAML; default: the model's own infer_cfg.yml (class names, input "
        "size), which every model this tool exports carries"))
    parser.add_argument("--infer_dir", default=None, help="directory of images to run on")
    parser.add_argument("--infer_img", default=None, help="one image; wins over --infer_dir")
    parser.add_argument("--output_dir", default="output", help="where drawn images and JSON go")
    parser.add_argument("--draw_threshold", type=float, default=0.5,
                        help="draw boxes with a score at or above this")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from slim.commands.infer import run_infer
    return run_infer(parse_args(argv))


if __name__ == "__main__":
    main()
