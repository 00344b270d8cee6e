"""DistillationStrategy: a frozen teacher inside the train program (its own names, no gradient,
no optimizer update, never pruned), the YOLOv3 distillation loss against a numpy reference,
teacher weights copied before pruning or loaded from teacher_weights, and a compress run with
pruning + distillation that checkpoints and resumes with the teacher kept.

The tiny model and dataset are tests/test_compress.py's (MobileNetV1 at width 0.125, 64 px).
"""
import os
import re
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from test_compress import DETECTION_CONFIG, make_workspace

from slim.config import create, load_config
from slim.config.slim_config import load_slim_config
from slim.errors import ConfigError
from slim.strategies import StrategyContext, build_strategies
from slim.strategies.distillation import LOSS_FETCH, SWITCH_NAME, TEACHER_PREFIX

WEIGHT = 2.5  # distillation_loss_weight of the unit tests (not 1, so the factor is checked)

DISTILL_SLIM_CONFIG = """
version: 1.0
pruners:
  pruner_1: {class: StructurePruner, criterions: {'*': l1_norm}}
strategies:
  uniform_pruning_strategy:
    class: UniformPruneStrategy
    pruner: pruner_1
    start_epoch: PRUNE_EPOCH
    target_ratio: 0.5
    pruned_params: auto
  distillation_strategy:
    class: DistillationStrategy
    start_epoch: DISTILL_EPOCH
    distillation_loss_weight: LOSS_FACTOR
    TEACHER_WEIGHTS
compressor:
  epoch: EPOCHS
  eval_epoch: 10
  checkpoint_path: ckpt
  save_eval_model: false
  prune_infer_model: false
  strategies: STRATEGIES
"""


def write_distill_slim_config(path, prune_epoch=1, distill_epoch=1, weight=WEIGHT, epochs=3,
                              teacher_weights=None,
                              strategies="[uniform_pruning_strategy, distillation_strategy]"):
    """A slim config with UniformPruneStrategy (auto, -50% FLOPs) and DistillationStrategy;
    by default the pruning is listed first (the teacher is copied before it fires anyway)."""
    text = (DISTILL_SLIM_CONFIG.replace("PRUNE_EPOCH", str(prune_epoch))
            .replace("DISTILL_EPOCH", str(distill_epoch)).replace("LOSS_FACTOR", str(weight))
            .replace("EPOCHS", str(epochs)).replace("STRATEGIES", strategies)
            .replace("TEACHER_WEIGHTS", f"teacher_weights: {teacher_weights}"
                     if teacher_weights else ""))
    with open(path, "w") as handle:
        handle.write(text)
    return path


@pytest.fixture(scope="module")
def detection_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("distill_config") / "tiny.yml"
    path.write_text(DETECTION_CONFIG)
    return load_config(str(path), ["LearningRate.schedulers=[]", "LearningRate.base_lr=0.01"])


def build_run(cfg, slim_file, hooks=True):
    """(ProgramSet, scope, executor, strategies) of the tiny model with the slim config's
    strategies as build hooks (none with hooks=False), startup run."""
    from slim.engine.distributed import DistributedEnv
    from slim.engine.programs import ProgramSet
    strategies = build_strategies(load_slim_config(slim_file), "VOC", log=lambda *a: None)
    programs = ProgramSet(create(cfg["architecture"], cfg), [3, 64, 64],
                          create("OptimizerBuilder", cfg), create("LearningRate", cfg).scheduler(0),
                          DistributedEnv(), build_hooks=strategies if hooks else ())
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    programs.startup.random_seed = 1
    executor.run(programs.startup, scope=scope)
    return programs, scope, executor, strategies


def fake_runner(programs, scope, executor, next_epoch=0, log=None):
    """What a strategy's hooks read of the Runner."""
    context = StrategyContext(next_epoch, programs, scope, log or (lambda *a: None), executor)
    return SimpleNamespace(state=SimpleNamespace(next_epoch=next_epoch, plan_records=[]),
                           context=context, epoch=next_epoch)


def tensor(scope, name):
    return np.array(scope.find_var(name).get_tensor())


def batch(seed=0, size=64):
    """A training batch: random image, two boxes per image."""
    rng = np.random.default_rng(seed)
    gt_box = np.zeros((2, 50, 4), "float32")
    gt_box[:, :2] = [[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.4, 0.3]]
    gt_label = np.zeros((2, 50), "int32")
    gt_label[:, :2] = [1, 3]
    return {"image": rng.random((2, 3, size, size), dtype=np.float32), "gt_box": gt_box,
            "gt_label": gt_label, "gt_score": np.ones((2, 50), "float32")}


def run_train(programs, scope, executor, fetch_names, seed=0):
    train = programs.train
    values = executor.run(train.program, feed=batch(seed), scope=scope,
                          fetch_list=[train.fetches[name] if name in train.fetches else name
                                      for name in fetch_names])
    return dict(zip(fetch_names, [np.asarray(value) for value in values]))


@pytest.fixture(scope="module")
def distilled(detection_config, tmp_path_factory):
    """The tiny model with prune (epoch 0) + distillation (epoch 0); the teacher initialised
    as before training; nothing trained or pruned yet."""
    root = tmp_path_factory.mktemp("distilled")
    slim_file = write_distill_slim_config(str(root / "slim.yaml"), prune_epoch=0, distill_epoch=0)
    programs, scope, executor, strategies = build_run(detection_config, slim_file)
    distill = strategies[1]
    distill.before_train(fake_runner(programs, scope, executor))
    return SimpleNamespace(programs=programs, scope=scope, executor=executor, prune=strategies[0],
                           distill=distill, slim_file=slim_file)


def test_teacher_vars_have_their_own_names_and_are_no_parameters(distilled):
    program = distilled.programs.train.program
    block = program.global_block()
    parameters = {param.name for param in block.all_parameters()}
    teacher = distilled.distill.teacher.persistables
    # every student parameter (BN statistics included) has its teacher copy, named apart
    assert set(teacher) == parameters
    assert all(name == TEACHER_PREFIX + source for source, name in teacher.items())
    assert not any(name.startswith(TEACHER_PREFIX) for name in parameters)
    for name in teacher.values():
        var = block.var(name)
        assert var.persistable and var.stop_gradient
        assert not isinstance(var, paddle.base.framework.Parameter)
    # the teacher is the student's weights at this point: equal tensors in separate vars
    for source, name in teacher.items():
        assert np.array_equal(tensor(distilled.scope, name), tensor(distilled.scope, source))
    assert tensor(distilled.scope, SWITCH_NAME).tolist() == [1.0]


def test_the_teacher_computes_what_the_student_computes_in_test_mode(distilled):
    programs, scope, executor = distilled.programs, distilled.scope, distilled.executor
    feed = batch(seed=7)
    outputs = [programs.train.fetches[f"output_{i}"].name for i in range(3)]
    teacher = run_train(programs, scope, executor,
                        [distilled.distill.teacher.outputs[name].name for name in outputs], seed=7)
    # the run above trained the student; the eval program of the student as copied needs
    # the copied tensors back, so compare against a scope holding only the teacher's copy
    student_scope = paddle.static.Scope()
    for name, teacher_name in distilled.distill.teacher.persistables.items():
        student_scope.var(name).get_tensor().set(tensor(scope, teacher_name), paddle.CPUPlace())
    evaluation = executor.run(programs.eval.program, scope=student_scope,
                              feed={"image": feed["image"],
                                    "im_size": np.full((2, 2), 64, "int32")},
                              fetch_list=[programs.eval.fetches[f"output_{i}"] for i in range(3)])
    for name, expected in zip(outputs, evaluation):
        assert np.allclose(teacher[distilled.distill.teacher.outputs[name].name], expected,
                           rtol=1e-5, atol=1e-5)


def test_no_gradient_or_optimizer_op_touches_the_teacher(distilled):
    block = distilled.programs.train.program.global_block()
    teacher_vars = {name for name in block.vars if name.startswith(TEACHER_PREFIX)}
    assert not [name for name in block.vars if name.startswith(TEACHER_PREFIX) and "@GRAD" in name]
    source_ops = len(distilled.distill.teacher_source.program.global_block().ops)
    writers = [op for op in block.ops if teacher_vars.intersection(op.output_arg_names)]
    # the teacher's own forward ops (test-mode batch norm lists its statistics as outputs)
    assert len(writers) == source_ops
    assert all(op.attr("op_role") == 0 for op in writers)  # forward role
    optimizer_ops = [op for op in block.ops if op.type in ("momentum", "sgd", "adam")]
    assert optimizer_ops and not any(
        teacher_vars.intersection(op.input_arg_names + op.output_arg_names) for op in optimizer_ops)


def test_training_updates_the_student_and_leaves_the_teacher_bit_identical(distilled):
    programs, scope, executor = distilled.programs, distilled.scope, distilled.executor
    teacher = distilled.distill.teacher.persistables
    before = {name: tensor(scope, name) for pair in teacher.items() for name in pair}
    for seed in range(2):
        run_train(programs, scope, executor, ["loss"], seed)
    for name in teacher.values():
        assert np.array_equal(tensor(scope, name), before[name]), name
    changed = [source for source in teacher if not np.array_equal(tensor(scope, source),
                                                                   before[source])]
    assert "conv1_weights" in changed and "yolo_output.0.conv.weights" in changed


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bernoulli_kl(student, teacher):
    """Sigmoid cross-entropy of student logits against sigmoid(teacher) minus its entropy."""
    p = sigmoid(teacher)
    return (p * (np.log(p) - np.log(sigmoid(student)))
            + (1 - p) * (np.log(1 - p) - np.log(1 - sigmoid(student))))


def numpy_distill_loss(students, teachers, anchors):
    """The distillation loss of slim.model.distill_loss, in numpy (float64)."""
    total = 0.0
    for student, teacher, count in zip(students, teachers, anchors):
        n = student.shape[0]
        s = student.astype(np.float64).reshape(n, count, -1, student.shape[2] * student.shape[3])
        t = teacher.astype(np.float64).reshape(s.shape)
        weight = sigmoid(t[:, :, 4])
        objectness = bernoulli_kl(s[:, :, 4], t[:, :, 4])
        box = (bernoulli_kl(s[:, :, 0], t[:, :, 0]) + bernoulli_kl(s[:, :, 1], t[:, :, 1])
               + np.abs(s[:, :, 2] - t[:, :, 2]) + np.abs(s[:, :, 3] - t[:, :, 3])) * weight
        classes = bernoulli_kl(s[:, :, 5:], t[:, :, 5:]) * weight[:, :, None]
        total += (objectness.sum() + box.sum() + classes.sum()) / n
    return total


def test_the_loss_is_detection_plus_weight_times_the_distillation_loss(distilled):
    teacher = distilled.distill.teacher.outputs
    names = ["loss", "loss_0", "loss_1", "loss_2", LOSS_FETCH, "output_0", "output_1", "output_2"]
    outputs = [distilled.programs.train.fetches[f"output_{i}"].name for i in range(3)]
    values = run_train(distilled.programs, distilled.scope, distilled.executor,
                       names + [teacher[name].name for name in outputs], seed=5)
    students = [values[f"output_{i}"] for i in range(3)]
    teachers = [values[teacher[name].name] for name in outputs]
    expected = WEIGHT * numpy_distill_loss(students, teachers, [3, 3, 3])
    assert expected > 0  # the train-mode student differs from the test-mode teacher
    assert values[LOSS_FETCH].item() == pytest.approx(expected, rel=1e-4)
    detection = sum(values[f"loss_{i}"].item() for i in range(3))
    assert values["loss"].item() == pytest.approx(detection + values[LOSS_FETCH].item(), rel=1e-6)


def test_the_distillation_loss_is_zero_with_zero_gradient_when_student_equals_teacher():
    from slim.model.distill_loss import yolov3_distill_loss
    rng = np.random.default_rng(3)
    values = [rng.normal(0, 2, (2, 3 * (5 + 4), h, h)).astype("float32") for h in (2, 4)]
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        students = [paddle.static.data(f"s{i}", v.shape, "float32") for i, v in enumerate(values)]
        teachers = [paddle.static.data(f"t{i}", v.shape, "float32") for i, v in enumerate(values)]
        for var in students:
            var.stop_gradient = False
        loss = yolov3_distill_loss(students, teachers, [3, 3])
        grads = paddle.static.gradients([loss], students)
    executor = paddle.static.Executor(paddle.CPUPlace())
    feed = {f"{kind}{i}": v for i, v in enumerate(values) for kind in "st"}
    result = executor.run(main, feed=feed, fetch_list=[loss] + grads)
    assert result[0].item() == 0.0  # the teacher's entropy is subtracted: KL, exactly 0
    # a minimum: no pull on the student (but for float32 rounding of sigmoid(t) - sigmoid(s))
    assert max(np.abs(grad).max() for grad in result[1:]) < 1e-6
    # and it equals the numpy reference elsewhere
    feed = dict(feed, s0=values[0] + 0.5, s1=values[1] * 0.7)
    value, *grads = executor.run(main, feed=feed, fetch_list=[loss] + grads)
    assert min(np.abs(grad).max() for grad in grads) > 1e-2
    assert value.item() == pytest.approx(numpy_distill_loss(
        [feed["s0"], feed["s1"]], values, [3, 3]), rel=1e-4)


@pytest.fixture(scope="module")
def pruned(distilled):
    """`distilled` after an `auto` -50% FLOPs plan (tests after this one see it pruned):
    the plan, the teacher's shapes and tensors and the student's tensors before it applied."""
    programs, scope = distilled.programs, distilled.scope
    block = programs.train.program.global_block()
    teacher = distilled.distill.teacher.persistables.values()
    shapes = {name: tuple(block.var(name).shape) for name in teacher}
    tensors = {name: tensor(scope, name) for name in teacher}
    students = {name: tensor(scope, name) for name in distilled.distill.teacher.persistables}
    plan = programs.plan("auto", 0.5, "l1_norm", scope)
    programs.apply(plan, scope)
    return SimpleNamespace(plan=plan, shapes=shapes, tensors=tensors, students=students)


def test_auto_pruning_plans_the_student_alone_and_leaves_the_teacher_whole(
        distilled, pruned, detection_config):
    programs, scope = distilled.programs, distilled.scope
    assert pruned.plan.matched
    assert not [name for name in pruned.plan.matched if name.startswith(TEACHER_PREFIX)]
    # the same plan as for the model alone, with the same tensors
    plain, plain_scope, _, _ = build_run(detection_config, distilled.slim_file, hooks=False)
    for name, value in pruned.students.items():
        plain_scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
    assert pruned.plan.to_dict()["groups"]
    assert plain.plan("auto", 0.5, "l1_norm", plain_scope).to_dict() == pruned.plan.to_dict()

    block = programs.train.program.global_block()
    assert block.var("conv2_1_sep_weights").shape[0] < \
        pruned.shapes["teacher_conv2_1_sep_weights"][0]
    for name, shape in pruned.shapes.items():
        assert tuple(block.var(name).shape) == shape, name
        assert np.array_equal(tensor(scope, name), pruned.tensors[name]), name
    # the next plan is made on the pruned model (the model-alone program follows the plans)
    again = programs.plan("auto", 0.5, "l1_norm", scope)
    pruned_filters = block.var("conv2_1_sep_weights").shape[0]
    assert [group.channels_before for group in again.groups
            if group.key[0] == "conv2_1_sep_weights"] == [pruned_filters]
    # the pruned student still trains against the unpruned teacher
    values = run_train(programs, scope, distilled.executor, ["loss", LOSS_FETCH])
    assert np.isfinite(values["loss"]).all() and values[LOSS_FETCH].item() > 0


@pytest.mark.parametrize("combined", [False, True], ids=["directory", "combined_params_file"])
def test_teacher_weights_load_into_the_teacher(distilled, detection_config, tmp_path, combined):
    """A directory of per-parameter files, or one combined file such as an exported eval
    model's `__params__` (bench/accuracy.py's control-taught methods use one)."""
    from slim.io.weights import save_weights
    # weights of the unpruned model that differ from every student tensor: the teacher's + 0.5
    weights_scope = paddle.static.Scope()
    saved = {}
    for name, teacher_name in distilled.distill.teacher.persistables.items():
        saved[name] = tensor(distilled.scope, teacher_name) + 0.5
        weights_scope.var(name).get_tensor().set(saved[name], paddle.CPUPlace())
    weights_dir = str(tmp_path / "teacher_weights")
    save_weights(weights_scope, distilled.distill.teacher_source.program, weights_dir,
                 combined=combined)
    assert os.path.isfile(weights_dir) == combined

    slim_file = write_distill_slim_config(str(tmp_path / "slim.yaml"), teacher_weights=weights_dir)
    programs, scope, executor, strategies = build_run(detection_config, slim_file)
    distill = strategies[1]
    distill.before_train(fake_runner(programs, scope, executor, next_epoch=1))
    assert distill.state_dict() == {"teacher_from": f"teacher_weights '{weights_dir}'"}
    for name, teacher_name in distill.teacher.persistables.items():
        assert np.array_equal(tensor(scope, teacher_name), saved[name]), name
    assert tensor(scope, SWITCH_NAME).tolist() == [1.0]


def test_config_and_teacher_errors_are_one_line(distilled, pruned, tmp_path):
    pruned_run = distilled
    def error_of(call):
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        return message

    bad = write_distill_slim_config(str(tmp_path / "w.yaml"), weight=0)
    assert re.search(r"w\.yaml: .*'distillation_loss_weight' must be > 0, got 0",
                     error_of(lambda: load_slim_config(bad)))
    typo = str(tmp_path / "typo.yaml")
    with open(write_distill_slim_config(typo)) as handle:
        text = handle.read().replace("distillation_loss_weight", "distill_loss_weight")
    with open(typo, "w") as handle:
        handle.write(text)
    assert "did you mean 'distillation_loss_weight'" in error_of(lambda: load_slim_config(typo))

    missing = write_distill_slim_config(str(tmp_path / "m.yaml"), teacher_weights="nowhere")
    distill = build_strategies(load_slim_config(missing), "VOC")[1]
    assert re.search(r"m\.yaml: strategy 'distillation_strategy': teacher_weights 'nowhere' "
                     r"does not exist", error_of(lambda: distill.validate(None)))

    # a teacher copied after the pruning would be the pruned student: refused, naming why
    late = write_distill_slim_config(str(tmp_path / "late.yaml"), prune_epoch=0, distill_epoch=1)
    distill = build_strategies(load_slim_config(late), "VOC")[1]
    distill.teacher_source, distill.teacher = pruned_run.distill.teacher_source, \
        pruned_run.distill.teacher
    runner = fake_runner(pruned_run.programs, pruned_run.scope, pruned_run.executor, next_epoch=1)
    message = error_of(lambda: distill.before_train(runner))
    assert re.search(r"late\.yaml: strategy 'distillation_strategy': the teacher copies the "
                     r"student at epoch 1, but '[^']+' is pruned there .*set start_epoch", message)
    assert distill.state_dict() == {"teacher_from": None}


def _compress(root, slim_file, capsys):
    """compress.py in-process in `root`; its stdout."""
    import compress as compress_cli
    capsys.readouterr()
    compress_cli.main(["-s", slim_file, "-c", os.path.join(root, "tiny.yml")])
    return capsys.readouterr().out


def test_compress_prunes_distills_checkpoints_and_resumes_with_the_teacher_kept(
        tmp_path, monkeypatch, capsys):
    from slim.io import checkpoint as ck
    root = str(tmp_path)
    make_workspace(root)
    monkeypatch.chdir(root)
    # listed after the pruning, both at epoch 1: the teacher is copied before the prune
    first = write_distill_slim_config(os.path.join(root, "slim.yaml"), epochs=2)
    output = _compress(root, first, capsys)
    copied = output.index("strategy 'distillation_strategy' at epoch 1: the teacher holds the "
                          "weights of the student at epoch 1; distillation loss weight 2.5")
    assert copied < output.index("strategy 'uniform_pruning_strategy' at epoch 1: pruned")
    distill_losses = {int(epoch): float(value) for epoch, value in re.findall(
        r"^epoch (\d)/1 iter \d/2 .* loss_distill (\S+) ", output, re.M)}
    assert distill_losses[0] == 0 and distill_losses[1] > 0  # off until the teacher is there

    def tensors(epoch):
        checkpoint = ck.validate_checkpoint(os.path.join(root, "ckpt", str(epoch)))
        return checkpoint, ck.read_checkpoint_tensors(checkpoint)

    checkpoint0, at0 = tensors(0)  # written after the copy, at the end of epoch 0
    teacher_names = [name for name in at0 if name.startswith(TEACHER_PREFIX) and name != SWITCH_NAME]
    assert "teacher_conv2_1_sep_weights" in teacher_names
    for name in teacher_names:
        assert np.array_equal(at0[name], at0[name[len(TEACHER_PREFIX):]]), name
    assert at0[SWITCH_NAME].tolist() == [1.0]
    assert checkpoint0.state.extra["hooks"]["distillation_strategy"] == {
        "teacher_from": "the student at epoch 1"}
    _, at1 = tensors(1)
    assert at1["conv2_1_sep_weights"].shape[0] < at0["conv2_1_sep_weights"].shape[0]  # pruned

    # resume with one more epoch: the teacher comes back from the checkpoint, not re-copied
    second = write_distill_slim_config(os.path.join(root, "slim.yaml"), epochs=3)
    output = _compress(root, second, capsys)
    assert re.search(r"^resumed from checkpoint '[^']*1': epoch 1 done", output, re.M), output
    assert "the teacher holds" not in output
    _, at2 = tensors(2)
    for name in teacher_names:
        assert np.array_equal(at1[name], at0[name]) and np.array_equal(at2[name], at0[name]), name
    assert at2["conv2_1_sep_weights"].shape == at1["conv2_1_sep_weights"].shape
    assert not np.array_equal(at2["conv2_1_sep_weights"], at1["conv2_1_sep_weights"])  # trained


def test_the_demo_distillation_config_is_the_demo_pruning_plus_distillation():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    demo = load_slim_config(os.path.join(root, "yolov3_mobilenet_v1_demo_slim.yaml"))
    distill = load_slim_config(os.path.join(root, "yolov3_mobilenet_v1_demo_distill_slim.yaml"))
    assert distill.compressor.strategies == ["distillation_strategy", "uniform_pruning_strategy"]
    assert distill.strategies["uniform_pruning_strategy"] == demo.strategies["uniform_pruning_strategy"]
    assert distill.compressor.epoch == demo.compressor.epoch
    built = build_strategies(distill, "VOC", log=lambda *a: None)
    assert [type(strategy).__name__ for strategy in built] == ["DistillationStrategy",
                                                                "UniformPruneStrategy"]
    assert (built[0].start_epoch, built[0].weight, built[0].teacher_weights) == (0, 1.0, None)
