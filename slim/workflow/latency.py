"""Paddle Inference latency of several exported models, measured interleaved (A, B, A, B
...) so that machine noise hits all alike; medians per model (with `slim.io.latency`)."""
import os

from slim.io.latency import interleaved_timings, medians

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
    return medians(interleaved_timings(runs, images, rounds)), threads


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
