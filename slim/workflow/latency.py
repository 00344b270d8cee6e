"""Paddle Inference latency of several exported models, measured interleaved (A, B, A, B
...) so that machine noise hits all alike; medians per model."""
import os
import time

import numpy as np

LATENCY_ROUNDS = 3


def measure_latency(model_dirs, images, rounds=LATENCY_ROUNDS, threads=None):
    """Median Paddle Inference ms per image (batch 1) of each model dir, measured
    interleaved (model A, model B, A, B ...) so machine noise hits both alike."""
    from slim.io import export
    threads = threads or (os.cpu_count() or 1)
    predictors = {name: export.inference_predictor(path, cpu_threads=threads)
                  for name, path in model_dirs.items()}
    runs = {name: (lambda feeds, predictor=predictor: export.run_predictor(predictor, feeds))
            for name, predictor in predictors.items()}
    timings = interleaved_timings(runs, images, rounds)
    return {name: float(np.median(values)) for name, values in timings.items()}, threads


def interleaved_timings(runs, images, rounds, warmup=1):
    """{name: [ms of each run]} of the functions `runs` ({name: run(feeds)}), each timed on
    every feed of `images` for `rounds` rounds, interleaved (A, B, A, B ...: the i-th
    timings of all names were taken back to back), after `warmup` untimed runs of each on
    the first feed (first runs allocate and optimise)."""
    for run in runs.values():
        for _ in range(warmup):
            run(images[0])
    timings = {name: [] for name in runs}
    for _ in range(rounds):
        for feeds in images:
            for name, run in runs.items():
                started = time.perf_counter()
                run(feeds)
                timings[name].append(1000.0 * (time.perf_counter() - started))
    return timings


def latency_inputs(cfg, count):
    """`count` preprocessed test images (batch 1 feeds) from the config's eval feed."""
    from slim.config import create
    from slim.data.loader import build_eval_loader
    feed = create(cfg["eval_feed"], cfg)
    loader = build_eval_loader(feed)
    inputs = []
    for batch in loader:  # batches come normalised (float32), as the models take them
        for image, im_size in zip(batch["image"], batch["im_size"]):
            inputs.append({"image": image[None], "im_size": im_size[None]})
            if len(inputs) == count:
                return inputs
    return inputs
