"""A detection config started from a VOC-format dataset directory (`python -m slim.config
generate --dataset_dir DIR`), and the anchors of a dataset (`python -m slim anchors`).

The dataset dir holds the train and test list files (`image_path xml_path` lines), the
XMLs and images they name, and `label_list.txt` (one class a line). The config is a base
config (default: the demo's CPU-sized MobileNetV1-YOLOv3, configs/yolov3_mobilenet_v1_demo.yml)
with the dataset's classes (num_classes, label_list), its dataset places, its train size
(image_shape, multi_scale_sizes of size - 32, size, size + 32) and anchors fitted to its
boxes at that size (`slim.data.anchors`), written as the loaded config with every value
that differs from the module defaults marked (`slim.config.cli.analyze_config`), so it
loads back to the same config.

Imports: config, data (voc, anchors), errors.
"""
import os

from slim.config import load_config
from slim.config.cli import analyze_config
from slim.data.anchors import (
    DEFAULT_ANCHORS,
    DEFAULT_RESTARTS,
    anchor_masks,
    box_sizes,
    fit_anchors,
)
from slim.data.voc import VOCDataSet
from slim.errors import UserError, shorten

FEEDS = ("YoloTrainFeed", "YoloEvalFeed", "YoloTestFeed")
DEFAULT_BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "yolov3_mobilenet_v1_demo.yml")


def dataset_source(dataset_dir, annotation="train.txt", label_list="label_list.txt"):
    """The VOCDataSet of `dataset_dir`'s list `annotation`, classes from `label_list`."""
    if not os.path.isdir(dataset_dir):
        raise UserError(f"--dataset_dir '{shorten(dataset_dir)}' is not a directory")
    return VOCDataSet(dataset_dir=dataset_dir, annotation=annotation, use_default_label=False,
                      label_list=label_list)


def dataset_anchors(source, size, count=DEFAULT_ANCHORS, restarts=DEFAULT_RESTARTS, seed=0):
    """{anchors, mean_iou, boxes, images, size} of the training boxes of `source` at `size`."""
    records = source.load_records(for_training=True)
    sizes = box_sizes(records, size)
    anchors, mean_iou = fit_anchors(sizes, count, restarts, seed)
    return {"anchors": anchors, "mean_iou": mean_iou, "boxes": len(sizes),
            "images": len(records), "size": size}


def check_train_size(size):
    """`size` when it is a multiple of 32 of at least 64 (YOLOv3's stride and the
    multi-scale sizes on either side); a UserError otherwise."""
    if size < 64 or size % 32:
        raise UserError(f"--size {size}: must be a multiple of 32, at least 64")
    return size


def dataset_config_overrides(dataset_dir, labels, size, anchors, train_list, test_list,
                             label_list):
    """The `-o` items that point a base config at the dataset (see the module docstring)."""
    items = [f"num_classes={len(labels)}", "weights=null", "pretrain_weights=null",
             "max_iters=auto", f"save_dir=output/{os.path.basename(os.path.normpath(dataset_dir))}",
             f"YOLOv3Head.anchors={anchors}", f"YOLOv3Head.anchor_masks={anchor_masks(len(anchors))}",
             f"YoloTrainFeed.multi_scale_sizes=[{size - 32}, {size}, {size + 32}]"]
    for feed, annotation in zip(FEEDS, (train_list, test_list, None)):
        items += [f"{feed}.image_shape=[3, {size}, {size}]",
                  f"{feed}.dataset.dataset_dir={dataset_dir}",
                  f"{feed}.dataset.use_default_label=false",
                  f"{feed}.dataset.label_list={label_list}"]
        if annotation:
            items.append(f"{feed}.dataset.annotation={annotation}")
    return items


def generate_dataset_config(dataset_dir, base=None, size=None, train_list="train.txt",
                            test_list="test.txt", label_list="label_list.txt",
                            anchors=DEFAULT_ANCHORS, restarts=DEFAULT_RESTARTS, seed=0):
    """(YAML text of the dataset's config, the anchors record): see the module docstring."""
    base = base or DEFAULT_BASE
    if not os.path.isfile(base):
        raise UserError(f"--base '{shorten(base)}' not found: name the detection config to start from")
    source = dataset_source(dataset_dir, train_list, label_list)
    labels = source.label_names()
    for name in (test_list,):
        if not os.path.isfile(os.path.join(dataset_dir, name)):
            raise UserError(f"--test_list: '{shorten(os.path.join(dataset_dir, name))}' not found "
                            "(the list file of the images to evaluate on)")
    if size is None:
        size = int(load_config(base)["YoloTrainFeed"]["image_shape"][-1])
    fitted = dataset_anchors(source, check_train_size(size), anchors, restarts, seed)
    overrides = dataset_config_overrides(dataset_dir, labels, size, fitted["anchors"], train_list,
                                         test_list, label_list)
    text = analyze_config(base, overrides)
    header = [f"# Detection config for the dataset '{dataset_dir}' ({len(labels)} classes: "
              f"{', '.join(labels)}), started from {base}",
              f"# by python -m slim.config generate --dataset_dir; anchors: k-means on IoU "
              f"distance over its {fitted['boxes']} training boxes at {size} px, mean best IoU "
              f"{fitted['mean_iou']:.3f}.",
              "# max_iters: auto is one pass over the training set (compress.py's epoch); set the "
              "LR schedule's milestones for your run's iterations."]
    return "\n".join(header + text.splitlines()[1:]) + "\n", fitted


def dataset_config_command(args):
    """`python -m slim.config generate --dataset_dir DIR ...` (parsed `args`): (the config's
    YAML text, a one-line note); with `args.out` the file is written (checked first: a file
    of the user's is never replaced) and the note says where."""
    from slim.io.output_places import check_output_file
    written = check_output_file(args.out, "--out") if args.out is not None else None
    text, fitted = generate_dataset_config(args.dataset_dir, args.base, args.size, args.train_list,
                                           args.test_list, args.label_list)
    note = (f"anchors: {fitted['boxes']} boxes at {fitted['size']} px, mean best IoU "
            f"{fitted['mean_iou']:.3f}")
    if written is not None:
        path = written[0].write_bytes(written[1], text.encode("utf-8"))
        note = f"wrote {path} ({note})"
    return text, note
