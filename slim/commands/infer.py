"""infer.py's job: run a saved inference model on images, draw the detections, write JSON.

    python infer.py --model_path checkpoints/9/eval_model/ --model_name __model__.infer \
        --params_name __params__ -c configs/yolov3_mobilenet_v1_voc.yml --infer_dir demo

Each image goes to `--output_dir/<its file name>` with the boxes scoring at
least `--draw_threshold` drawn (class name and score on each), and
`--output_dir/detections.json` lists, per image, the same detections:
`{"image": path, "output": drawn path, "detections": [{"label", "name", "score",
"bbox": [x1, y1, x2, y2]}]}` with boxes in original-image pixels. `--infer_img`
wins over `--infer_dir`. Without `-c`, the class names, input size and
preprocessing come from the model's own `infer_cfg.yml` (every model this tool
exports carries one, checked against the model files' sizes and sha256); with
`-c`, from the config and its test feed's dataset (`use_default_label` for VOC,
or its `label_list`), which wins. `--model_name X.onnx` runs the ONNX copy that
`python -m slim export --format onnx` wrote into the model dir with onnxruntime
(same preprocessing, names and output; one image at a time).

`--output_dir` is checked before the model is loaded: it must be writable and
not an input, and infer replaces there only files it wrote itself (listed in
its `.slim-written.json`); a file of an output's name that infer did not
write, or that is one of the input images, is a one-line error naming it.
Every file is written to a temp name and renamed, so none is ever half written.
"""
import os
import sys

from slim.errors import UserError, shorten, stop_on_sigterm
from slim.io.onnx_export import ONNX_SUFFIX
from slim.io.output_places import WrittenFiles, check_output_dir

DETECTIONS_FILE = "detections.json"


def output_names(image_paths):
    """{image path: the file name of its drawn copy in --output_dir}: the image's own file
    name, made unique when two inputs share a name. A name without an image extension the
    drawing can be encoded as (a PNG named photo.txt, '.slim-written.json') gets '.jpg'
    appended, so no output is ever named like detections.json or the tool's own files."""
    from slim.data.loader import IMAGE_EXTENSIONS
    names, used = {}, set()
    for image_path in image_paths:
        stem, extension = os.path.splitext(os.path.basename(image_path))
        if extension.lower() not in IMAGE_EXTENSIONS:
            stem, extension = stem + extension, ".jpg"
        candidate, counter = stem + extension, 1
        while candidate in used or candidate == DETECTIONS_FILE:
            candidate = f"{stem}_{counter}{extension}"
            counter += 1
        used.add(candidate)
        names[image_path] = candidate
    return names


def check_infer_outputs(args, cfg, paths):
    """Before the model is loaded: --output_dir is writable and no input, and none of the
    files infer will write there (drawn images, detections.json) is a file infer did not
    write or one of the input images. Returns (WrittenFiles of --output_dir, output names)."""
    from slim.io.run_inputs import config_inputs
    inputs = (config_inputs(cfg, ("test_feed",), args.config, args.model_path, args.infer_dir, *paths)
              if cfg is not None else [args.model_path, args.infer_dir, *paths])
    check_output_dir(args.output_dir, "--output_dir", inputs)
    names = output_names(paths)
    written = WrittenFiles(args.output_dir)  # paths reported as the user spelled the dir
    written.check([*names.values(), DETECTIONS_FILE], "--output_dir", inputs)
    return written, names


def write_drawn_image(written, name, image):
    """Encode `image` as its file name's format and write it atomically into the output dir
    (recorded as infer's); returns the path."""
    import cv2
    ok, encoded = cv2.imencode(os.path.splitext(name)[1] or ".jpg", image)
    if not ok:
        raise UserError(f"cannot encode the drawn image '{shorten(name)}' as "
                        f"{os.path.splitext(name)[1] or 'JPEG'}")
    return written.write_bytes(name, encoded.tobytes())


def feed_of_model(args):
    """(YoloTestFeed, class names) from the model's infer_cfg.yml, when no -c is given:
    a one-line UserError when the model has none or its preprocessing is not this
    version's."""
    from slim.data.feeds import YoloTestFeed
    from slim.data.transforms import eval_preprocessing
    from slim.io.export import INFER_CONFIG_NAME, read_infer_config
    config = read_infer_config(args.model_path)
    if config is None:
        raise UserError(f"'{shorten(args.model_path)}' has no {INFER_CONFIG_NAME} (exported by an "
                        "older version or another tool): pass its detection config with -c")
    resize = config["preprocess"]["resize"]
    expected = eval_preprocessing(resize["height"], resize["width"])
    if config["preprocess"] != expected:
        differing = sorted(key for key in set(expected) | set(config["preprocess"])
                           if expected.get(key) != config["preprocess"].get(key))
        raise UserError(f"{shorten(os.path.join(args.model_path, INFER_CONFIG_NAME))}: its "
                        f"preprocess differs from this version's in {', '.join(differing)}; "
                        "pass the model's detection config with -c")
    feed = YoloTestFeed(image_shape=[3, resize["height"], resize["width"]])
    return feed, list(config["label_list"])


def onnx_batch_runner(args, image_shape, source):
    """For `--model_name X.onnx`: a function running one batch through onnxruntime, returning
    [bbox, bbox_num] as the inference program does; UserError when the file is not such a
    model or takes another image size than `image_shape` (from `source`)."""
    from slim.io.onnx_export import check_onnx_interface, onnx_session, run_onnx
    path = os.path.join(args.model_path, args.model_name)
    session = onnx_session(path)
    check_onnx_interface(session, path)
    declared = next(item.shape for item in session.get_inputs() if item.name == "image")[1:]
    if any(isinstance(d, int) and d > 0 and d != int(w) for d, w in zip(declared, image_shape)):
        raise UserError(f"the ONNX model takes images of {list(declared)}, but {source} says "
                        f"{list(image_shape)}")
    return lambda batch: run_onnx(session, batch)


def run_infer(args):
    """Entry of infer.py: detect, draw and save; returns the list written to detections.json
    (a `.json` model: loaded and run in Paddle 3's new IR)."""
    from slim.io.export import is_pir_program_file
    from slim.prune.pir import ir_guard
    with ir_guard(is_pir_program_file(os.path.join(args.model_path, args.model_name))):
        return _run_infer(args)


def _run_infer(args):
    import cv2
    import paddle
    from tqdm import tqdm

    from slim.config import create, load_config
    from slim.data.loader import build_test_loader, image_paths
    from slim.engine import distributed
    from slim.engine.evaluation import check_class_count, check_image_shape, detections_of_run
    from slim.io import export
    from slim.io.visualize import draw_detections
    paddle.enable_static()
    stop_on_sigterm()  # again: paddle's import installed its own handler
    if not 0.0 <= args.draw_threshold <= 1.0:
        raise UserError(f"--draw_threshold {args.draw_threshold} must be in [0, 1]")
    if args.opt and not args.config:
        raise UserError("-o overrides options of a detection config: give it with -c")
    if args.config:
        cfg = load_config(args.config, args.opt)
        if not cfg.get("test_feed"):
            raise UserError(f"{args.config}: test_feed is not set; name the inference data feed "
                            "(e.g. test_feed: YoloTestFeed)")
        feed, use_gpu = create(cfg["test_feed"], cfg), cfg.get("use_gpu", False)
    else:
        cfg, (feed, names) = None, feed_of_model(args)
        use_gpu = paddle.is_compiled_with_cuda()
    paths = image_paths(args.infer_img, args.infer_dir)
    written_files, output_names_of = check_infer_outputs(args, cfg, paths)
    source = cfg["test_feed"] if cfg is not None else export.INFER_CONFIG_NAME
    if args.model_name.endswith(ONNX_SUFFIX):
        run_batch, lod_only = onnx_batch_runner(args, feed.image_shape, source), False
    else:
        env = distributed.DistributedEnv()
        place = distributed.select_place(use_gpu, env,
                                         log=lambda message: print(message, file=sys.stderr))
        executor = paddle.static.Executor(place)
        scope = paddle.static.Scope()
        program, feed_names, fetch_vars = export.load_exported_program(
            args.model_path, executor, scope, args.model_name, args.params_name)
        check_image_shape(program, "image", feed.image_shape, source, fix=None if cfg else (
            f"its {export.INFER_CONFIG_NAME} does not fit its program: re-export the model, or "
            "pass its detection config with -c"))
        lod_only = len(fetch_vars) == 1

        def run_batch(batch):
            return executor.run(program, feed={name: batch[name] for name in feed_names},
                                fetch_list=list(fetch_vars), scope=scope, return_numpy=not lod_only)
    if cfg is not None:
        loader = build_test_loader(feed, paths)
        names = list(loader.label_names)
        check_class_count(cfg.get("num_classes"), names, cfg["test_feed"])
    else:
        loader = build_test_loader(feed, paths, names=names)

    written = []
    for batch in tqdm(loader, total=len(loader), desc="infer", unit="batch", file=sys.stderr,
                      leave=False):
        results = run_batch(batch)
        detections = detections_of_run(results, len(batch["im_file"]))
        if detections is None:
            raise UserError("the model's only output has no LoD; run with -c CONFIG -o "
                            f"{cfg['test_feed'] if cfg is not None else 'YoloTestFeed'}.batch_size=1")
        for image_path, image_detections in zip(batch["im_file"], detections):
            image = cv2.imread(image_path, cv2.IMREAD_COLOR)
            drawn, rows = draw_detections(image, image_detections, names, args.draw_threshold)
            out_path = write_drawn_image(written_files, output_names_of[image_path], drawn)
            written.append({
                "image": image_path, "output": out_path,
                "detections": [{"label": int(label),
                                "name": names[int(label)] if int(label) < len(names) else str(int(label)),
                                "score": round(float(score), 6),
                                "bbox": [round(float(v), 2) for v in box]}
                               for label, score, *box in rows.tolist()]})
            print(f"{image_path}: {len(rows)} detections >= {args.draw_threshold} -> {out_path}")
    json_path = written_files.write_json(DETECTIONS_FILE, {
        "model": os.path.join(args.model_path, args.model_name),
        "draw_threshold": args.draw_threshold, "images": written})
    print(f"wrote {len(written)} images and {json_path}")
    return written
