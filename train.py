#!/usr/bin/env python
"""Train a detector from a detection config (PaddleDetection's tools/train.py), ending in model_final.

    python train.py -c configs/yolov3_mobilenet_v1_demo.yml [-o KEY=VALUE ...] [--eval] \
        [--output_eval DIR] [-d dataset/demo] [--checkpoint_path DIR] [-r CHECKPOINT] [--scale_lr]
"""
import slim  # noqa: F401  (classic static IR before paddle)
from slim.commands.cli import add_config_arguments, add_scale_lr_argument, new_parser
from slim.errors import exit_on_user_error


def parse_args(argv=None):
    parser = new_parser(__doc__.splitlines()[0], prog="python train.py")
    add_config_arguments(parser)
    parser.add_argument("--eval", action="store_true",
                        help="evaluate at every checkpoint (snapshot_iter), not only at the end")
    parser.add_argument("--output_eval", default=None,
                        help="directory for evaluation results: eval_result.json (latest eval), "
                             "train_summary.json, and bbox.json for COCO")
    parser.add_argument("--checkpoint_path", default=None,
                        help="where checkpoints and model_final go (default: save_dir/<config "
                             "name>/); a restart resumes from its highest complete checkpoint")
    parser.add_argument("-r", "--resume_checkpoint", default=None, metavar="CHECKPOINT",
                        help="resume from this checkpoint (an epoch directory train.py or "
                             "compress.py wrote, e.g. output/<config name>/3) unless "
                             "checkpoint_path holds a newer one")
    add_scale_lr_argument(parser)
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from slim.commands.train import run_train
    return run_train(parse_args(argv))


if __name__ == "__main__":
    main()
