"""infer.py's job: run a saved inference model on images, draw the detections, write JSON.

    python infer.py --model_path checkpoints/9/eval_model/ --model_name __model__.infer \
        --params_name __params__ -c configs/yolov3_mobilenet_v1_voc.yml --infer_dir demo

Each image goes to `--output_dir/<its file name>` with the boxes scoring at
least `--draw_threshold` drawn (class name and score on each), and
`--output_dir/detections.json` lists, per image, the same detections:
`{"image": path, "output": drawn path, "detections": [{"label", "name", "score",
"bbox": [x1, y1, x2, y2]}]}` with boxes in original-image pixels. `--infer_img`
wins over `--infer_dir`. Class names come from the test feed's dataset
(`use_default_label` for VOC, or its `label_list`).
"""
import json
import os
import sys

from slim.errors import UserError

DETECTIONS_FILE = "detections.json"


def _output_path(output_dir, image_path, used):
    """output_dir/<image file name>, made unique when two inputs share a name."""
    name = os.path.basename(image_path)
    stem, extension = os.path.splitext(name)
    candidate, counter = name, 1
    while candidate in used:
        candidate = f"{stem}_{counter}{extension}"
        counter += 1
    used.add(candidate)
    return os.path.join(output_dir, candidate)


def run_infer(args):
    """Entry of infer.py: detect, draw and save; returns the list written to detections.json."""
    import cv2
    import paddle
    from tqdm import tqdm
    from slim import distributed, export
    from slim.config import create, load_config
    from slim.data.loader import build_test_loader, image_paths
    from slim.evaluate import check_image_shape, detections_of_run
    from slim.visualize import draw_detections
    paddle.enable_static()
    if not 0.0 <= args.draw_threshold <= 1.0:
        raise UserError(f"--draw_threshold {args.draw_threshold} must be in [0, 1]")
    cfg = load_config(args.config, args.opt)
    if not cfg.get("test_feed"):
        raise UserError(f"{args.config}: test_feed is not set; name the inference data feed "
                        "(e.g. test_feed: YoloTestFeed)")
    paths = image_paths(args.infer_img, args.infer_dir)
    feed = create(cfg["test_feed"], cfg)
    env = distributed.DistributedEnv()
    place = distributed.select_place(cfg.get("use_gpu", False), env,
                                     log=lambda message: print(message, file=sys.stderr))
    executor = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    program, feed_names, fetch_vars = export.load_exported_program(
        args.model_path, executor, scope, args.model_name, args.params_name)
    check_image_shape(program, "image", feed.image_shape, cfg["test_feed"])
    loader = build_test_loader(feed, paths)
    names = list(loader.label_names)
    try:
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output_dir '{args.output_dir}' cannot be created ({error.strerror})") from None

    written, used_names = [], set()
    lod_only = len(fetch_vars) == 1
    for batch in tqdm(loader, total=len(loader), desc="infer", unit="batch", file=sys.stderr,
                      leave=False):
        results = executor.run(program, feed={name: batch[name] for name in feed_names},
                               fetch_list=list(fetch_vars), scope=scope, return_numpy=not lod_only)
        detections = detections_of_run(results, len(batch["im_file"]))
        if detections is None:
            raise UserError("the model's only output has no LoD; run with YoloTestFeed.batch_size=1")
        for image_path, image_detections in zip(batch["im_file"], detections):
            image = cv2.imread(image_path, cv2.IMREAD_COLOR)
            drawn, rows = draw_detections(image, image_detections, names, args.draw_threshold)
            out_path = _output_path(args.output_dir, image_path, used_names)
            if not cv2.imwrite(out_path, drawn):
                raise UserError(f"cannot write '{out_path}'")
            written.append({
                "image": image_path, "output": out_path,
                "detections": [{"label": int(label),
                                "name": names[int(label)] if int(label) < len(names) else str(int(label)),
                                "score": round(float(score), 6),
                                "bbox": [round(float(v), 2) for v in box]}
                               for label, score, *box in rows.tolist()]})
            print(f"{image_path}: {len(rows)} detections >= {args.draw_threshold} -> {out_path}")
    json_path = os.path.join(args.output_dir, DETECTIONS_FILE)
    with open(json_path, "w") as handle:
        json.dump({"model": os.path.join(args.model_path, args.model_name),
                   "draw_threshold": args.draw_threshold, "images": written}, handle, indent=1)
    print(f"wrote {len(written)} images and {json_path}")
    return written

