"""What a run prints and records while it trains: log lines with losses, LR, speed and ETA,
optional VisualDL scalars, and the stop on a non-finite loss."""
import collections
import math

import numpy as np

from slim.errors import UserError


class TrainingStopped(UserError):
    """Training cannot go on (e.g. the loss is not finite); the last good checkpoint is kept."""


class ScalarWriter:
    """VisualDL scalars under `logdir` when visualdl is importable; does nothing otherwise."""

    def __init__(self, logdir, enabled=True):
        self._writer = None
        if not enabled:
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            return
        self._writer = LogWriter(logdir=logdir)

    @property
    def active(self):
        return self._writer is not None

    def add(self, tag, value, step):
        if self._writer is not None:
            self._writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def close(self):
        if self._writer is not None:
            self._writer.close()


def format_duration(seconds):
    """'1:02:03' / '4:05' style durations for ETAs."""
    seconds = int(max(0, round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class TrainLog:
    """Smoothed losses, speed and ETA; one log line every `log_iter` iterations.

    Args:
        log_iter: iterations between log lines.
        smooth_window: iterations the logged losses and speed are averaged over.
        total_iterations: iterations of the whole run (for the ETA).
        images_per_iteration: images of one iteration over all cards.
        log: print-like function (rank 0 prints; others pass a no-op).
        scalars: a ScalarWriter.
        reduce_mean: `reduce_mean(vector) -> vector`, the element-wise mean over the ranks
            of a collective run (`distributed.RankSum.mean`); the losses logged and
            written as scalars are those means. It is called once per log line, with the
            losses of every iteration since the last line, on every rank at the same
            iterations. None: this process's losses.
    """

    def __init__(self, log_iter, smooth_window, total_iterations, images_per_iteration,
                 log=print, scalars=None, reduce_mean=None):
        self.log_iter = max(1, int(log_iter))
        self.total_iterations = total_iterations
        self.images_per_iteration = images_per_iteration
        self.losses = collections.defaultdict(lambda: collections.deque(maxlen=smooth_window))
        self.step_times = collections.deque(maxlen=smooth_window)
        self.log = log
        self.scalars = scalars or ScalarWriter(None, enabled=False)
        self.reduce_mean = reduce_mean
        self.pending = []  # (global_iteration, {name: this rank's loss}) since the last line

    def record(self, epoch, epochs, iteration_in_epoch, iterations_per_epoch, global_iteration,
               losses, lr, seconds):
        """Add one iteration; print a line when due. `global_iteration` counts from 1."""
        self.pending.append((global_iteration, dict(losses)))
        self.scalars.add("train/lr", lr, global_iteration)
        self.step_times.append(seconds)
        if iteration_in_epoch % self.log_iter and iteration_in_epoch != iterations_per_epoch:
            return None
        self._take_pending()
        step_time = float(np.mean(self.step_times))
        speed = self.images_per_iteration / step_time if step_time > 0 else float("inf")
        eta = step_time * max(0, self.total_iterations - global_iteration)
        # medians over the window, as PaddleDetection logged them: one outlier does not hide the trend
        parts = " ".join(f"{name} {np.median(values):.4f}" for name, values in self.losses.items())
        line = (f"epoch {epoch}/{epochs - 1} iter {iteration_in_epoch}/{iterations_per_epoch} "
                f"(total {global_iteration}) {parts} lr {lr:.6g} {speed:.1f} img/s "
                f"eta {format_duration(eta)}")
        self.log(line)
        return line


    def _take_pending(self):
        """Move the pending iterations' losses (averaged over ranks: one all-reduce of all
        of them) into the smoothing windows and the scalars."""
        names = list(self.pending[0][1])
        values = [losses[name] for _, losses in self.pending for name in names]
        if self.reduce_mean is not None:
            values = [float(value) for value in self.reduce_mean(values)]
        for row, (iteration, _) in enumerate(self.pending):
            for column, name in enumerate(names):
                value = values[row * len(names) + column]
                self.losses[name].append(value)
                self.scalars.add(f"train/{name}", value, iteration)
        self.pending = []


def check_finite(losses, epoch, iteration, last_checkpoint):
    """TrainingStopped naming the loss, the iteration and the checkpoint kept, if any loss
    is NaN or infinite."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if not bad:
        return
    kept = (f"the last good checkpoint '{last_checkpoint}' is kept" if last_checkpoint
            else "no checkpoint was written yet")
    values = ", ".join(f"{name}={value}" for name, value in bad.items())
    raise TrainingStopped(f"training stopped: the loss is not finite ({values}) at epoch {epoch} "
                          f"iteration {iteration}; nothing of this epoch was saved and {kept}; "
                          "lower LearningRate.base_lr or check the data")


def log_to_stdout(message):
    """Print a log line and flush (logs are read live, e.g. by tests and tail -f)."""
    print(message, flush=True)
