"""slim.engine: the loop calls every hook point in order, hooks' states go into checkpoints and
come back on resume (also for a strategy other than UniformPruneStrategy, after kill -9), the
build-time hook adds to the train program before the optimizer, and old checkpoints resume."""
import os
import re
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from test_compress import child_env, make_workspace, reference_run, write_slim_config

from slim.engine import HookBase, Runner
from slim.engine.runner import HOOK_POINTS
from slim.engine.train_log import TrainingStopped
from slim.io import checkpoint as ck
from slim.io.checkpoint import CheckpointError
from slim.runs.restore import checkpoint_hook_states
from slim.strategies import Strategy


class Recorder(HookBase):
    """Records every hook point it sees as (point, epoch, iteration in epoch, global iteration)."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls
        self.seen = 0

    def __getattribute__(self, attribute):
        if attribute in HOOK_POINTS:
            def record(runner):
                self.calls.append((self.name, attribute, runner.epoch, runner.iteration_in_epoch,
                                   runner.state.iteration))
                self.seen += 1
            return record
        return object.__getattribute__(self, attribute)

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def _state(next_epoch=0, iteration=0):
    return SimpleNamespace(next_epoch=next_epoch, iteration=iteration, plan_records=[])


def test_runner_calls_every_hook_point_in_order():
    calls = []
    hooks = [Recorder("a", calls), Recorder("b", calls)]
    state = _state(next_epoch=1, iteration=2)
    steps = []
    runner = Runner(lambda batch: steps.append(batch) or {"loss": 1.0}, hooks, state)
    runner.train(3, lambda epoch: [f"e{epoch}b0", f"e{epoch}b1"], lambda epoch: 2)
    assert steps == ["e1b0", "e1b1", "e2b0", "e2b1"]
    assert (state.next_epoch, state.iteration) == (3, 6)
    expected = [("before_train", None, 0, 2)]
    for epoch, first in ((1, 2), (2, 4)):
        expected.append(("before_epoch", epoch, 0, first))
        for i in (1, 2):
            expected += [("before_iter", epoch, i - 1, first + i - 1),
                         ("after_iter", epoch, i, first + i)]
        expected.append(("after_epoch", epoch, 2, first + 2))
    expected.append(("after_train", 2, 2, 6))
    assert calls == [(name, *call) for call in expected for name in "ab"]
    assert runner.hook_states() == {"a": {"seen": 14}, "b": {"seen": 14}}
    runner.load_hook_states({"a": {"seen": 3}, "unknown": {}})
    assert (hooks[0].seen, hooks[1].seen) == (3, 14)


def test_runner_stops_on_a_short_epoch_and_still_calls_after_train():
    calls = []
    runner = Runner(lambda batch: {}, [Recorder("a", calls)], _state())
    with pytest.raises(TrainingStopped, match="gave 1 batches for the 2 iterations of epoch 0"):
        runner.train(2, lambda epoch: ["only one"], lambda epoch: 2)
    assert [call[1] for call in calls][-2:] == ["after_iter", "after_train"]


def test_build_hook_adds_to_the_train_program_before_the_optimizer(run):
    import paddle

    from slim.config import create, load_config
    from slim.engine.distributed import DistributedEnv
    from slim.engine.programs import ProgramSet

    class AddsALoss(HookBase):
        """What distillation does: an extra term in the loss, before minimize."""
        optimizer_ops_seen = None

        def build_train_program(self, train, startup):
            self.optimizer_ops_seen = [op.type for op in train.program.global_block().ops
                                       if op.type == "momentum"]
            with paddle.static.program_guard(train.program, startup):
                extra = paddle.mean(train.program.global_block().var("conv1_weights")) * 0.0
                train.fetches["loss"] = paddle.add(train.fetches["loss"], extra)
            self.loss_name = train.fetches["loss"].name

    cfg = load_config(run["config"], [])
    hook = AddsALoss()
    programs = ProgramSet(create(cfg["architecture"], cfg), [3, 64, 64],
                          create("OptimizerBuilder", cfg),
                          create("LearningRate", cfg).scheduler(0), DistributedEnv(),
                          build_hooks=[hook])
    assert hook.optimizer_ops_seen == []
    ops = programs.train.program.global_block().ops
    outputs = {name for op in ops for name in op.output_arg_names}
    assert hook.loss_name in outputs and hook.loss_name + "@GRAD" in outputs  # minimized
    assert any(op.type == "momentum" for op in ops)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return reference_run(tmp_path_factory)


def _checkpoint_with(extra, plans):
    return SimpleNamespace(path="ckpt/4", state=ck.CheckpointState(4, 8, pruning_plans=plans,
                                                                   extra=extra))


def test_old_checkpoints_resume_or_are_refused_naming_why():
    from slim.strategies.uniform_prune import UniformPruneStrategy
    uniform = UniformPruneStrategy.__new__(UniformPruneStrategy)
    uniform.name, uniform.fired = "prune", False
    other = Strategy.__new__(Strategy)
    other.name = "other"
    plans = [{"strategy": "prune", "epoch": 1, "plan": {}}]
    # written before hook states: the UniformPruneStrategy whose plan it holds has fired
    states = checkpoint_hook_states(_checkpoint_with({"history": []}, plans), [uniform, other])
    assert states == {"prune": {"fired": True}}
    # plans that came with `weights` are the starting model's, not a strategy's
    assert checkpoint_hook_states(_checkpoint_with({}, [dict(plans[0], source="weights")]),
                                  [uniform]) == {}
    # a strategy that cannot take an old checkpoint over refuses it in one line
    other.name = "prune"
    with pytest.raises(CheckpointError, match=r"^checkpoint 'ckpt/4' was written before strategies "
                       r"stored their state and strategy 'prune' \(Strategy\) cannot take it over"):
        checkpoint_hook_states(_checkpoint_with({}, plans), [other])
    # new checkpoints carry the states; a malformed record is refused
    assert checkpoint_hook_states(_checkpoint_with({"hooks": {"x": {"a": 1}}}, plans), []) == \
        {"x": {"a": 1}}
    with pytest.raises(CheckpointError, match="hook states are not a mapping"):
        checkpoint_hook_states(_checkpoint_with({"hooks": [1]}, plans), [])


# compress.py with one more strategy, defined here (the slim config's schema knows only the
# shipped classes): it records every epoch it began and the model's mAP on half the eval set,
# from context.evaluate, in its state.
RECORDING_COMPRESS = textwrap.dedent('''
    import sys
    import slim
    import slim.strategies as strategies
    from slim.strategies import Strategy


    class EpochRecorder(Strategy):
        def __init__(self):
            self.name, self.start_epoch, self.epochs, self.metrics = "epoch_recorder", 0, [], []

        def on_epoch_begin(self, context):
            self.epochs.append(context.epoch)
            self.metrics.append(round(context.evaluate(fraction=0.5), 6))
            context.log(f"recorder at epoch {context.epoch}: {self.epochs}")

        def state_dict(self):
            return {"epochs": list(self.epochs), "metrics": list(self.metrics)}

        def load_state_dict(self, state):
            self.epochs, self.metrics = list(state["epochs"]), list(state["metrics"])


    build = strategies.build_strategies
    strategies.build_strategies = lambda *args, **kwargs: build(*args, **kwargs) + [EpochRecorder()]
    import compress
    compress.main(sys.argv[1:])
''')


def _recording_run(root, slim_file, config):
    script = os.path.join(root, "recording_compress.py")
    with open(script, "w") as handle:
        handle.write(RECORDING_COMPRESS)
    return subprocess.Popen([sys.executable, "-u", script, "-s", slim_file, "-c", config],
                            cwd=root, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _read_until(process, pattern, lines):
    for line in process.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return
    process.wait()
    raise AssertionError(f"exit {process.returncode} before {pattern!r}:\n" + "".join(lines[-30:]))


def test_a_strategys_state_survives_kill_9_and_resume(tmp_path_factory, run):
    root = str(tmp_path_factory.mktemp("recorder"))
    os.symlink(os.path.join(run["root"], "data"), os.path.join(root, "data"))
    paths = make_workspace(root)
    slim_file = write_slim_config(root, "slim.yaml")
    lines = []
    process = _recording_run(root, slim_file, paths["config"])
    _read_until(process, r"^epoch 0: checkpoint ", lines)
    _read_until(process, r"^recorder at epoch 1: \[0, 1\]", lines)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    first = ck.validate_checkpoint(os.path.join(root, "ckpt", "0"))
    assert first.state.extra["hooks"]["epoch_recorder"]["epochs"] == [0]

    process = _recording_run(root, slim_file, paths["config"])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    # (killed during epoch 1: checkpoint 1 is there only if its write beat the kill)
    assert re.search(r"^resumed from checkpoint '[^']*[01]': epoch [01] done", output, re.M), output
    final = ck.validate_checkpoint(os.path.join(root, "ckpt", "2"))
    recorded = final.state.extra["hooks"]["epoch_recorder"]
    assert recorded["epochs"] == [0, 1, 2]
    assert len(recorded["metrics"]) == 3 and all(0 <= m <= 1 for m in recorded["metrics"])
    assert recorded["metrics"][0] == first.state.extra["hooks"]["epoch_recorder"]["metrics"][0]
    assert final.state.extra["hooks"]["uniform_pruning_strategy"]["fired"] is True
    assert [p["strategy"] for p in final.state.pruning_plans] == ["uniform_pruning_strategy"]


def test_the_learning_curve_bench_runs_on_the_runner(capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "bench"))
    try:
        from demo_learning import CurvePoints
    finally:
        sys.path.pop(0)
    maps = iter([10.0, 20.0])
    curve = CurvePoints(2, 3, lambda: next(maps))
    losses = iter([4.0, 2.0, 1.0])
    Runner(lambda batch: {"loss": next(losses)}, [curve], _state()).train(
        1, lambda epoch: range(3), lambda epoch: 3)
    assert curve.rows == [(2, 3.0, 10.0), (3, 1.5, 20.0)]
    assert capsys.readouterr().out.splitlines() == ["iteration 2: loss 3.00, test mAP 10.00%",
                                                    "iteration 3: loss 1.50, test mAP 20.00%"]
