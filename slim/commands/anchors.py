"""`python -m slim anchors`: YOLOv3 anchors fitted to a dataset's boxes (k-means, IoU distance).

    python -m slim anchors --dataset_dir DIR [--annotation train.txt] [--label_list label_list.txt]
        [--size 320] [-n 9] [--restarts 20] [--seed 0] [--yaml FILE.yml]
    python -m slim anchors -c CONFIG [-o KEY=VALUE ...] [...]   # the config's train set and size

Example (the demo dataset at the demo config's train size):
    python -m slim anchors -c configs/yolov3_mobilenet_v1_demo.yml --yaml output/anchors.yml

Every training box is scaled to the network input (`--size` x `--size`, default the
config's train image_shape, else 608) and the boxes are clustered by k-means on the
distance 1 - IoU (boxes and anchors centred alike, cluster centres the median box, the
best of `--restarts` k-means++ runs). Prints the mean best IoU (the mean over boxes of the
IoU with their closest anchor: how well the anchors fit) and the `-o` line that sets them
(with their anchor_masks) for train.py / compress.py; `--yaml` also writes them as a
YOLOv3Head section to paste into a config. `python -m slim.config generate --dataset_dir
DIR` does this for a whole new config.
"""
import sys

from slim.commands.cli import add_override_argument, parse_command_args
from slim.data.anchors import DEFAULT_ANCHORS, DEFAULT_RESTARTS, anchors_override, anchors_yaml
from slim.data.dataset_config import check_train_size, dataset_anchors, dataset_source
from slim.errors import UserError, exit_on_user_error, shorten
from slim.io.output_places import check_output_file

DEFAULT_SIZE = 608


def add_arguments(parser):
    """The `anchors` options."""
    parser.add_argument("--dataset_dir", default=None, metavar="DIR",
                        help="a VOC-format dataset dir (list file, XMLs, label_list.txt)")
    parser.add_argument("--annotation", default="train.txt", help="list file of the training set")
    parser.add_argument("--label_list", default="label_list.txt", help="class names file in DIR")
    parser.add_argument("-c", "--config", default=None,
                        help="detection config: its train feed's dataset and image size")
    add_override_argument(parser, "overrides of the -c config")
    parser.add_argument("--size", type=int, default=None,
                        help=f"train input size in px (default: the config's, else {DEFAULT_SIZE})")
    parser.add_argument("-n", "--anchors", type=int, default=DEFAULT_ANCHORS, metavar="N",
                        help=f"number of anchors, a multiple of 3 (default {DEFAULT_ANCHORS})")
    parser.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS,
                        help=f"k-means runs, the best kept (default {DEFAULT_RESTARTS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yaml", default=None, metavar="FILE.yml",
                        help="also write the anchors as a YOLOv3Head section")
    return parser


def parse_args(argv=None):
    return parse_command_args(__doc__, add_arguments, argv)


def _source_and_size(args):
    if (args.dataset_dir is None) == (args.config is None):
        raise UserError("give the dataset: --dataset_dir DIR or -c CONFIG (its train feed), "
                        "not both")
    if args.dataset_dir is not None:
        return dataset_source(args.dataset_dir, args.annotation, args.label_list), (
            args.size or DEFAULT_SIZE)
    from slim.config import create, load_config
    from slim.data.loader import open_dataset
    cfg = load_config(args.config, args.opt)
    feed = create(cfg["train_feed"], cfg)
    return open_dataset(feed.dataset), args.size or int(feed.image_shape[-1])


def run(args, out=None):
    """Fit and print the anchors (and write --yaml); 0."""
    out = out or sys.stdout
    if args.anchors < 3 or args.anchors % 3:
        raise UserError(f"-n {args.anchors}: YOLOv3 takes a multiple of 3 anchors (3 outputs)")
    if args.restarts < 1:
        raise UserError(f"--restarts {args.restarts} must be >= 1")
    source, size = _source_and_size(args)
    check_train_size(size)
    written = check_output_file(args.yaml, "--yaml") if args.yaml is not None else None
    fitted = dataset_anchors(source, size, args.anchors, args.restarts, args.seed)
    summary = (f"{fitted['boxes']} boxes of {fitted['images']} images "
               f"({shorten(source.annotation_path())}) at {size} px: {len(fitted['anchors'])} "
               f"anchors, mean best IoU {fitted['mean_iou']:.3f} (k-means on IoU distance, "
               f"best of {args.restarts} runs)")
    print(summary, file=out)
    print("-o " + anchors_override(fitted["anchors"]), file=out)
    if written is not None:
        path = written[0].write_bytes(written[1], anchors_yaml(fitted["anchors"], summary).encode("utf-8"))
        print(f"wrote {path}", file=out)
    return 0


@exit_on_user_error
def main(argv=None):
    """`python -m slim anchors ARGS` in-process; exit code."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
