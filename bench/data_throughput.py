#!/usr/bin/env python
"""Training-pipeline throughput (images/s) of the YOLOv3 loader at 608 and 320 with 0, 1, 2 workers.

    python bench/data_throughput.py [--json bench/results/data_throughput.json]

Generates the demo dataset into a temporary directory, upscaled 2x so images
are VOC-sized (384-512 px a side), and times the full training transform
(decode, mixup, colour distortion, expand, crop, flip, resize, normalise,
batching) through `build_train_loader`, worker processes as in training.
Each cell is the median of --repeats runs of --batches batches after
--warmup batches (worker start-up excluded); the configurations are
interleaved so machine noise hits them alike. Prints a table, writes JSON.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)


def upscale_dataset(dataset_dir, factor):
    """Resize every image of a VOC-format dataset by `factor` and scale its boxes to match."""
    import cv2
    for name in os.listdir(os.path.join(dataset_dir, "JPEGImages")):
        stem = os.path.splitext(name)[0]
        image_path = os.path.join(dataset_dir, "JPEGImages", name)
        image = cv2.imread(image_path)
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(image_path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        xml_path = os.path.join(dataset_dir, "Annotations", stem + ".xml")
        tree = ElementTree.parse(xml_path)
        for tag in ("size/width", "size/height", "object/bndbox/xmin", "object/bndbox/ymin",
                    "object/bndbox/xmax", "object/bndbox/ymax"):
            for element in tree.getroot().findall(tag):
                element.text = str(int(round(float(element.text) * factor)))
        tree.write(xml_path)


def time_configuration(dataset_dir, size, workers, batch_size, warmup, batches, mixup, seed):
    """Images/s of `batches` batches after `warmup` batches."""
    from slim.data import YoloTrainFeed
    from slim.data.loader import build_train_loader
    feed = YoloTrainFeed(dataset={"dataset_dir": dataset_dir, "annotation": "train.txt",
                                  "use_default_label": False},
                         image_shape=[3, size, size], multi_scale_sizes=[size], batch_size=batch_size,
                         num_workers=workers, use_process=True, mixup_epoch=1 if mixup else 0,
                         bufsize=4 * batch_size)
    loader = build_train_loader(feed, seed=seed)
    stream = iter(loader.batches(0, warmup + batches))
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    count = 0
    for batch in stream:
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "data_throughput.json"),
                        help="where to write the results")
    parser.add_argument("--sizes", type=int, nargs="+", default=[608, 320])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=120, help="images in the generated dataset")
    parser.add_argument("--upscale", type=float, default=2.0,
                        help="resize the demo images by this factor (2: VOC-sized)")
    parser.add_argument("--no_mixup", action="store_true", help="time without mixup")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import logging
    logging.getLogger("slim.data").setLevel(logging.WARNING)
    from slim.data.demo import generate_demo_dataset
    with tempfile.TemporaryDirectory() as temporary:
        dataset_dir = generate_demo_dataset(os.path.join(temporary, "demo"), num_train=args.images,
                                            num_test=1, seed=0)
        if args.upscale != 1.0:
            upscale_dataset(dataset_dir, args.upscale)
        configurations = [(size, workers) for size in args.sizes for workers in args.workers]
        samples = {configuration: [] for configuration in configurations}
        for repeat in range(args.repeats):
            for size, workers in configurations:
                rate = time_configuration(dataset_dir, size, workers, args.batch_size, args.warmup,
                                          args.batches, not args.no_mixup, seed=repeat)
                samples[(size, workers)].append(rate)
    import paddle
    results = [{"size": size, "workers": workers, "images_per_s": statistics.median(rates),
                "runs": rates} for (size, workers), rates in samples.items()]
    report = {
        "benchmark": "training data pipeline throughput (decode + YOLOv3 augmentation + batching)",
        "mixup": not args.no_mixup, "batch_size": args.batch_size, "timed_batches": args.batches,
        "repeats": args.repeats, "image_side_px": [int(192 * args.upscale), int(256 * args.upscale)],
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "paddle": paddle.__version__, "results": results,
    }
    print(f"training pipeline, images/s (median of {args.repeats}; batch {args.batch_size}, "
          f"mixup {'on' if not args.no_mixup else 'off'}, source images "
          f"{report['image_side_px'][0]}-{report['image_side_px'][1]} px, {os.cpu_count()} CPUs)")
    header = "| size | " + " | ".join(f"{w} workers" for w in args.workers) + " |"
    print(header)
    print("|" + "---|" * (len(args.workers) + 1))
    for size in args.sizes:
        cells = [f"{statistics.median(samples[(size, w)]):.1f}" for w in args.workers]
        print(f"| {size} | " + " | ".join(cells) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as json_file:
        json.dump(report, json_file, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
