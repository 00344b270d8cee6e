"""Resume after kill -9: at random moments and in the middle of a checkpoint write, each restart
resumes from the last complete epoch (replaying the pruning plan, so shapes match), a partial
checkpoint is never picked, and the final tensors are bit-identical to an uninterrupted run's."""
import os
import random
import re
import signal
import subprocess
import time

import numpy as np
from test_compress import (
    PRUNED_PARAM,
    child_env,
    compress_command,
    make_workspace,
    reference_run,
    write_slim_config,
)

from slim.io import checkpoint as ck

UNPRUNED_FILTERS, PRUNED_FILTERS = 8, 5


class Run:
    """A compress.py process whose stdout is read line by line until a trigger."""

    def __init__(self, root, slim_file, config, **env):
        self.process = subprocess.Popen(compress_command(slim_file, config), cwd=root,
                                        env=child_env(**env), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines = []

    def read_until(self, pattern, timeout=300):
        """Read lines until one matches `pattern`; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line
            assert time.monotonic() < deadline, f"no line matching {pattern!r} in time"
        self.process.wait()
        raise AssertionError(f"compress.py exited ({self.process.returncode}) before printing "
                             f"{pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def kill(self, delay=0.0):
        time.sleep(delay)
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stdout.close()
        return self.process.pid

    def finish(self, timeout=300):
        output, _ = self.process.communicate(timeout=timeout)
        self.lines.extend(output.splitlines())
        assert self.process.returncode == 0, "\n".join(self.lines[-40:])

    def resumed_from(self):
        """The checkpoint dir this run said it resumed from, or None."""
        for line in self.lines:
            match = re.match(r"resumed from checkpoint '([^']+)': epoch (\d+) done, iteration "
                             r"(\d+), (\d+) pruning plan", line)
            if match:
                return match.group(1), int(match.group(4))
        return None


def _filters(checkpoint):
    return checkpoint.manifest["variables"][PRUNED_PARAM]["shape"][0]


def _latest(checkpoints):
    return ck.latest_complete_checkpoint(checkpoints, log=lambda message: None)


def test_kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path_factory):
    reference = reference_run(tmp_path_factory)
    root = str(tmp_path_factory.mktemp("resume"))
    os.symlink(os.path.join(reference["root"], "data"), os.path.join(root, "data"))
    paths = make_workspace(root)
    slim_file = write_slim_config(root, "slim.yaml")
    checkpoints = os.path.join(root, "ckpt")
    rng = random.Random(5)

    # 1. Killed while writing the checkpoint of epoch 1 (after the pruning at epoch 1):
    #    epoch 0 stays the last complete one, the half-written epoch 1 is only a temp dir.
    run = Run(root, slim_file, paths["config"], **{ck.PAUSE_ENV: "60@1"})
    run.read_until(r"^checkpoint: pausing .* epoch 1 ")
    pid = run.kill()
    temp_dir, final_dir = sorted(os.listdir(checkpoints))
    assert temp_dir.startswith(f".tmp-1-{pid}-") and final_dir == "0"
    latest = _latest(checkpoints)
    assert latest.state.epoch == 0 and _filters(latest) == UNPRUNED_FILTERS

    # 2. Killed at a random moment while training epoch 1 (pruned again after the restart).
    run = Run(root, slim_file, paths["config"])
    run.read_until(r"^epoch 1/2 iter 1/2 ")
    run.kill(delay=rng.uniform(0.0, 0.3))
    assert run.resumed_from() == (os.path.join("ckpt", "0"), 0)
    assert any(line.startswith("strategy 'uniform_pruning_strategy' at epoch 1: pruned")
               for line in run.lines)
    latest = _latest(checkpoints)
    assert latest.state.epoch in (0, 1) and os.path.isdir(os.path.join(checkpoints, "0"))

    # 3. Killed at a random moment during epoch 2, after checkpoint 1 is complete.
    resume_point = latest.path
    run = Run(root, slim_file, paths["config"])
    run.read_until(r"^epoch 1: checkpoint ")
    run.kill(delay=rng.uniform(0.0, 0.3))
    assert run.resumed_from()[0] == os.path.relpath(resume_point, root)
    latest = _latest(checkpoints)
    assert latest.state.epoch in (1, 2) and _filters(latest) == PRUNED_FILTERS
    assert [p["strategy"] for p in latest.state.pruning_plans] == ["uniform_pruning_strategy"]

    # 4. The last restart replays the plan of checkpoint 1 and finishes the run.
    resume_point = latest
    run = Run(root, slim_file, paths["config"])
    run.finish()
    if resume_point.state.epoch < 2:
        assert run.resumed_from() == (os.path.relpath(resume_point.path, root), 1)
        assert not any(line.startswith("strategy ") for line in run.lines)  # not pruned twice
    assert sorted(os.listdir(checkpoints)) == ["0", "1", "2"]  # temp dirs of the killed runs gone

    final, expected = _latest(checkpoints), ck.validate_checkpoint(
        os.path.join(reference["checkpoints"], "2"))
    assert final.state.iteration == expected.state.iteration == 6
    resumed_tensors = ck.read_checkpoint_tensors(final)
    reference_tensors = ck.read_checkpoint_tensors(expected)
    assert resumed_tensors.keys() == reference_tensors.keys()
    for name, value in reference_tensors.items():
        assert resumed_tensors[name].shape == value.shape, name
        np.testing.assert_array_equal(resumed_tensors[name], value, err_msg=name)
