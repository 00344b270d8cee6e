"""A demo-sized detector overfit on one batch of demo images: a model that really detects.

The demo config (configs/yolov3_mobilenet_v1_demo.yml: MobileNetV1 and head at width 0.25,
5 classes) at 128 px, trained from scratch with Adam on the 4 test images of a tiny demo
dataset, no augmentation, until the in-memory eval program scores VOC mAP 1.0 on them.
It is exported with `slim.export.export_model` and its parameters saved as a weights dir,
so tests can score real detections through `__model__.infer`, Paddle Inference, eval.py,
infer.py and compress.py (a model that detects nothing scores 0 everywhere, and 0 == 0
checks nothing).

`fitted_model(tmp_path_factory)` trains once per session (about 10 s on 2 cores) and
caches the result in the session's temp dir; every module that needs it calls it.
"""
import os
import shutil
import xml.etree.ElementTree as ElementTree

import numpy as np
from session_cache import cached_in_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml")
CLASSES = ["circle", "square", "triangle", "star", "cross"]
SIZE = 128
NUM_IMAGES = 4
LEARNING_RATE = 0.003
CHECK_EVERY = 20       # iterations between two scorings of the model being fitted
MAX_ITERATIONS = 400   # it fits after 40-80 iterations on both Paddle lines


def config_overrides(data_dir, size=SIZE):
    """-o items that run the demo config on `data_dir`'s 4 test images at `size` px on CPU,
    every image of the eval feed in one batch."""
    items = ["weights=null", "use_gpu=false", f"YoloEvalFeed.batch_size={NUM_IMAGES}",
             "YoloEvalFeed.num_workers=0"]
    for feed in ("YoloTrainFeed", "YoloEvalFeed", "YoloTestFeed"):
        items += [f"{feed}.image_shape=[3,{size},{size}]", f"{feed}.dataset.dataset_dir={data_dir}"]
    return items


def config_arguments(fitted):
    """The `-c CONFIG -o ...` arguments of eval.py / infer.py / compress.py for `fitted`."""
    return ["-c", DEMO_CONFIG, "-o", *fitted["overrides"]]


def ground_truth_from_xml(data_dir, list_file):
    """(boxes, classes, difficult) per image of a VOC list file, parsed here with ElementTree
    (not with the project's VOC reader)."""
    truths = []
    with open(os.path.join(data_dir, list_file)) as handle:
        for line in handle:
            xml_path = os.path.join(data_dir, line.split()[1])
            boxes, classes, difficult = [], [], []
            for obj in ElementTree.parse(xml_path).findall("object"):
                box = obj.find("bndbox")
                boxes.append([float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
                classes.append(CLASSES.index(obj.find("name").text))
                difficult.append(int(obj.findtext("difficult", "0")))
            truths.append((np.array(boxes).reshape(-1, 4), np.array(classes), np.array(difficult)))
    return truths


def voc_map(detections, truths):
    """The project's VOC metric as eval.py configures it for the demo config (11point)."""
    from slim.metrics import VOCMetric
    metric = VOCMetric(len(CLASSES), map_type="11point")
    metric.update(detections, truths)
    return metric.accumulate()


def eval_batch(fitted):
    """The eval feed's one batch of the fitted images (image resized and normalised, im_size,
    ground truth), as eval.py builds it."""
    from slim.config import create, load_config
    from slim.data.loader import build_eval_loader
    cfg = load_config(DEMO_CONFIG, fitted["overrides"])
    batches = list(build_eval_loader(create("YoloEvalFeed", cfg)))
    assert len(batches) == 1 and len(batches[0]["image"]) == NUM_IMAGES
    return batches[0]


def predictor_detections(model_dir, batch):
    """Per-image detections of `batch` through a Paddle Inference predictor of `model_dir`."""
    from slim.io import export
    from slim.model import split_detections
    predictor = export.inference_predictor(model_dir)
    bbox, bbox_num = export.run_predictor(predictor, {"image": batch["image"],
                                                      "im_size": batch["im_size"]})
    return split_detections(bbox, bbox_num)


def executor_outputs(model_dir, feeds, model_name="__model__.infer"):
    """(the fetches of an exported program run by the Executor on `feeds`, its scope)."""
    import paddle

    from slim.io import export
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    program, _, fetch_vars = export.load_exported_program(model_dir, executor, scope,
                                                          model_name=model_name)
    return executor.run(program, feed=feeds, fetch_list=fetch_vars, scope=scope), scope


def _train_feed(batch):
    """The train program's feed for the eval batch: boxes as normalised (cx, cy, w, h)."""
    from slim.data.transforms import boxes_to_normalized_cxcywh, pad_ground_truth
    from slim.model.programs import NUM_MAX_BOXES
    boxes, labels, scores = [], [], []
    for gt_bbox, gt_class, (height, width) in zip(batch["gt_bbox"], batch["gt_class"],
                                                  batch["im_size"]):
        keep = gt_class >= 0
        padded = pad_ground_truth(boxes_to_normalized_cxcywh(gt_bbox[keep], height, width),
                                  gt_class[keep], np.ones(int(keep.sum()), np.float32),
                                  NUM_MAX_BOXES)
        for items, value in zip((boxes, labels, scores), padded):
            items.append(value)
    return {"image": batch["image"], "gt_box": np.stack(boxes), "gt_label": np.stack(labels),
            "gt_score": np.stack(scores)}


def _fit(cfg, batch, truths):
    """Train the demo model on `batch` until its eval program scores mAP 1.0; return
    (eval BuiltProgram, scope, executor, iterations, mAP)."""
    train, evaluation, scope, executor = fitting_programs(cfg)
    iterations, score = fit_until_map_1(train, evaluation, scope, executor, batch, truths)
    return evaluation, scope, executor, iterations, score


def fitting_programs(cfg):
    """(train BuiltProgram with Adam, eval BuiltProgram, scope, executor) of the demo model
    of `cfg` at SIZE px, its startup run (seed 0)."""
    import paddle

    from slim.config import create
    from slim.model import build_eval_program, build_train_program
    paddle.seed(0)
    model = create("YOLOv3", cfg)
    train = build_train_program(model, image_shape=[3, SIZE, SIZE])
    with paddle.static.program_guard(train.program, train.startup), \
            paddle.utils.unique_name.guard():
        paddle.optimizer.Adam(LEARNING_RATE).minimize(train.fetches["loss"])
    evaluation = build_eval_program(model, image_shape=[3, SIZE, SIZE])
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    train.startup.random_seed = 0
    executor.run(train.startup, scope=scope)
    return train, evaluation, scope, executor


def fit_until_map_1(train, evaluation, scope, executor, batch, truths, max_iterations=MAX_ITERATIONS):
    """Run the train program (with its optimizer) on `batch` until the eval program scores
    mAP 1.0 on it (checked every CHECK_EVERY iterations) or `max_iterations` ran; return
    (iterations, mAP)."""
    from slim.model import split_detections
    feed = _train_feed(batch)
    eval_feed = {"image": batch["image"], "im_size": batch["im_size"]}
    fetches = [evaluation.fetches["bbox"], evaluation.fetches["bbox_num"]]
    iterations, score = 0, 0.0
    while iterations < max_iterations and score < 1.0:
        for _ in range(CHECK_EVERY):
            executor.run(train.program, feed=feed, fetch_list=[train.fetches["loss"]], scope=scope)
        iterations += CHECK_EVERY
        bbox, bbox_num = executor.run(evaluation.program, feed=eval_feed, fetch_list=fetches,
                                      scope=scope)
        score = voc_map(split_detections(bbox, bbox_num), truths)["mAP"]
    return iterations, score


def fitted_model(tmp_path_factory):
    """The fitted model of this session (trained on first use): a dict of
    root, data (demo dataset dir), images (dir of the 4 fitted images only), overrides
    (see config_overrides), model_dir (exported), weights (per-parameter weights dir),
    iterations and mAP (of the in-memory eval program when fitting stopped)."""
    return cached_in_session(tmp_path_factory, "fitted_model", _fitted_model)


def fitted_infer_config(fitted):
    """The infer_cfg.yml content compress.py would export with the fitted model."""
    from slim.config import create, load_config
    from slim.runs.inference import inference_config
    cfg = load_config(DEMO_CONFIG, fitted["overrides"])
    return inference_config(cfg, create("YOLOv3", cfg), list(CLASSES), [3, SIZE, SIZE])


def _fitted_model(root):
    from slim.config import load_config
    from slim.data.demo import main as make_demo_dataset
    from slim.io import export
    from slim.io.weights import save_weights
    data = os.path.join(root, "data")
    make_demo_dataset(["--out", data, "--train", "1", "--test", str(NUM_IMAGES)])
    images = os.path.join(root, "images")
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(data, "test.txt")) as handle:
        for line in handle:
            shutil.copy(os.path.join(data, line.split()[0]), images)
    fitted = {"root": root, "data": data, "images": images,
              "overrides": config_overrides(data),
              "model_dir": os.path.join(root, "eval_model"),
              "weights": os.path.join(root, "weights")}
    batch = eval_batch(fitted)
    evaluation, scope, executor, iterations, score = _fit(
        load_config(DEMO_CONFIG, fitted["overrides"]), batch,
        ground_truth_from_xml(data, "test.txt"))
    export.export_model(evaluation, scope, executor, fitted["model_dir"],
                        infer_config=fitted_infer_config(fitted))
    save_weights(scope, evaluation.program, fitted["weights"])
    fitted.update(iterations=iterations, mAP=score)
    return fitted
