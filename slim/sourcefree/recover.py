"""Recovery by distillation: the pruned inference program learns the unpruned model's outputs.

    recover(student, student_scope, teacher_runner, executor, images.calibration,
            iterations=300, lr=1e-4, batch_size=8, checkpoint_dir="ckpt/")

The pruned inference program is cloned into a trainable one: every float parameter it
reads is trained (conv weights, the biases of folded batch norm, learned affine scalars,
batch-norm scale and offset) but batch-norm statistics, which stay frozen (`use_global_stats`),
as does every `is_test` op. The loss, per distilled var, is the mean squared difference to
the teacher's value divided by the teacher's mean square (so outputs of any scale count
alike); a fetched softmax output is distilled on its logits (the softmax's input), the same
var name in both programs. The teacher is the unpruned model, run frozen on the same
augmented batch (light augmentation: brightness and contrast jitter, a shift of up to 2 px,
a little noise), so no labels are needed. Adam, constant `lr` after a linear warm-up.

Every `checkpoint_every` iterations the trainable program's persistables (weights and
Adam's moments) go into `checkpoint_dir` (slim.io.checkpoint: atomic, sha256 manifest);
a later call with the same dir resumes after the last complete one. The batches and
augmentation of iteration i come from a generator seeded with (seed, i), so a resumed
run computes what an uninterrupted one does.
"""
import os
import signal
import sys
import time

import numpy as np

from slim.errors import UserError
from slim.io.checkpoint import (
    CheckpointState,
    latest_complete_checkpoint,
    load_checkpoint_persistables,
    save_checkpoint,
)
from slim.sourcefree.images import Sample, feeds_of
from slim.sourcefree.programs import append_op, feed_dtypes, forward_clone, new_feed, reduce_all

DEFAULT_LR = 1e-4
DEFAULT_BATCH = 8
WARMUP = 20
LOG_EVERY = 20
# Test hook: kill this process with SIGKILL when iteration N starts (a real kill -9).
KILL_ENV = "SLIM_RECOVER_TEST_KILL_AT"


class RecoverError(UserError):
    """Recovery cannot start or resume."""


def distill_vars(program, fetch_names):
    """The vars to distill for each fetch target: its producer's input when a softmax
    produced it (logits carry more than probabilities), else the target itself."""
    block = program.global_block()
    producers = {}
    for op in block.ops:
        for name in op.output_arg_names:
            producers[name] = op
    result = []
    for name in fetch_names:
        op = producers.get(name)
        if op is not None and op.type == "softmax":
            result.append(op.input("X")[0])
        else:
            result.append(name)
    return result


def trainable_program(program, fetch_names, lr, warmup=WARMUP):
    """(train program, startup program, target feed names, distilled names, loss name)."""
    import paddle
    train = forward_clone(program)
    startup = paddle.static.Program()
    block = train.global_block()
    frozen = set()
    for op in block.ops:
        if op.type in ("batch_norm", "sync_batch_norm"):
            op._set_attr("use_global_stats", True)
            frozen.update(op.input("Mean") + op.input("Variance"))
    names = distill_vars(train, fetch_names)
    params = []
    for param in block.all_parameters():
        if param.name in frozen or param.dtype not in (paddle.float32,):
            param.stop_gradient = True
            continue
        param.stop_gradient = False
        param.trainable = True
        params.append(param)
    if not params:
        raise RecoverError("the pruned program has no float parameters to train")
    with paddle.static.program_guard(train, startup):
        targets, terms = [], []
        for name in names:
            student = block.var(name)
            target = new_feed(block, "slim_teacher", student.shape, student.dtype)
            scale = new_feed(block, "slim_teacher_scale", [1], "float32")
            targets.append((target.name, scale.name))
            difference = append_op(block, "elementwise_sub", {"X": student, "Y": target},
                                   {"axis": -1})
            square = append_op(block, "elementwise_mul", {"X": difference, "Y": difference},
                               {"axis": -1})
            mean = reduce_all(block, square, "reduce_mean")
            terms.append(append_op(block, "elementwise_mul", {"X": mean, "Y": scale},
                                   {"axis": -1}))
        loss = terms[0] if len(terms) == 1 else append_op(block, "sum", {"X": terms})
        step = paddle.optimizer.lr.LinearWarmup(lr, max(1, warmup), 0.0, lr)
        optimizer = paddle.optimizer.Adam(learning_rate=step, parameters=params)
        optimizer.minimize(loss, startup_program=startup, parameters=params)
    return train, startup, targets, names, loss.name, step


def augment(image, rng):
    """A lightly changed copy of a preprocessed CHW image (see module docstring)."""
    out = image * np.float32(rng.uniform(0.85, 1.15)) + np.float32(rng.uniform(-0.15, 0.15))
    dy, dx = rng.integers(-2, 3, size=2)
    out = np.roll(out, (int(dy), int(dx)), axis=(1, 2))
    out = out + rng.standard_normal(out.shape).astype(np.float32) * np.float32(0.02)
    return out.astype(np.float32)


def _batch_of(samples, shapes, iteration, seed, batch_size):
    """The augmented batch of `iteration`: same-shaped samples drawn with (seed, iteration)."""
    rng = np.random.default_rng([seed, iteration])
    keys = sorted(shapes)
    weights = np.asarray([len(shapes[k]) for k in keys], np.float64)
    key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
    pool = shapes[key]
    chosen = rng.choice(len(pool), size=min(batch_size, len(pool)), replace=False)
    return [Sample(pool[i].path, augment(pool[i].image, rng), pool[i].original_size,
                   pool[i].factors) for i in chosen]


def recover(model, scope, executor, teacher_runner, samples, iterations, lr=DEFAULT_LR,
            batch_size=DEFAULT_BATCH, checkpoint_dir=None, checkpoint_every=50, seed=0,
            identity=None, log=None):
    """Train the pruned `model` (its params in `scope`) to reproduce `teacher_runner`'s
    outputs on augmented `samples` for `iterations` steps; returns a summary dict.
    `identity`: JSON that must equal the checkpoints' (e.g. the plan), else RecoverError."""
    import paddle
    from tqdm import tqdm
    log = log or (lambda message: print(message, file=sys.stderr))
    fetch_names = [var.name for var in model.fetch_vars]
    train, startup, targets, names, loss_name, step = trainable_program(
        model.program, fetch_names, lr)
    dtypes = feed_dtypes(model.program, model.feed_names)
    shapes = {}
    for sample in samples:
        shapes.setdefault(sample.image.shape, []).append(sample)
    start = 0
    with paddle.static.scope_guard(scope):
        executor.run(startup)
    if checkpoint_dir:
        found = latest_complete_checkpoint(checkpoint_dir, log)
        if found is not None:
            if identity is not None and found.state.extra.get("identity") != identity:
                raise RecoverError(f"--checkpoint_dir '{checkpoint_dir}' holds a recovery of "
                                   "another prune (its plan or options differ); give an "
                                   "empty dir")
            with paddle.static.scope_guard(scope):
                load_checkpoint_persistables(found, train, scope, executor)
            start = found.state.iteration
            log(f"resuming recovery from {found.path} (iteration {start} of {iterations})")
    kill_at = int(os.environ.get(KILL_ENV, "-1"))
    losses, begun = [], time.time()
    bar = tqdm(total=iterations, initial=start, desc="recovery", unit="it", file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)
    for iteration in range(start, iterations):
        if iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        batch = _batch_of(samples, shapes, iteration, seed, batch_size)
        teacher = teacher_runner.run(batch, names)
        feeds = feeds_of(batch, model.feed_names, dtypes)
        for (target, scale), value in zip(targets, teacher):
            value = np.asarray(value, np.float32)
            feeds[target] = value
            feeds[scale] = np.asarray([1.0 / max(float((value ** 2).mean()), 1e-8)], np.float32)
        step.step(iteration)  # the schedule follows the iteration, also on resume
        with paddle.static.scope_guard(scope):
            (loss,) = executor.run(train, feed=feeds, fetch_list=[loss_name])
        losses.append(float(np.asarray(loss).reshape(-1)[0]))
        bar.update(1)
        done = iteration + 1
        if done % LOG_EVERY == 0 or done == iterations:
            speed = (done - start) / max(time.time() - begun, 1e-9)
            eta = (iterations - done) / max(speed, 1e-9)
            log(f"recovery {done}/{iterations} loss {np.mean(losses[-LOG_EVERY:]):.5f} "
                f"lr {step.get_lr():.2e} {speed:.2f} it/s eta {eta:.0f}s")
        if checkpoint_dir and (done % checkpoint_every == 0 or done == iterations):
            state = CheckpointState(epoch=done, iteration=done,
                                    extra={"identity": identity, "loss": losses[-1]})
            save_checkpoint(checkpoint_dir, state, train, scope, executor)
    bar.close()
    return {"iterations": iterations, "resumed_at": start, "lr": lr, "batch_size": batch_size,
            "distilled": names, "first_loss": losses[0] if losses else None,
            "last_loss": float(np.mean(losses[-LOG_EVERY:])) if losses else None,
            "seconds": round(time.time() - begun, 2)}
