"""Learning-rate schedule (pure python and Paddle scheduler) and the optimizer builder."""
import numpy as np
import paddle
import pytest

from slim.config import REGISTRY
from slim.config.validate import InvalidValue, validate_options
from slim.engine.optimizer import (
    GlobalNormClip,
    LearningRate,
    LinearWarmup,
    OptimizerBuilder,
    PiecewiseDecay,
    build_optimizer,
)

# The seed's VOC recipe: warmup 1000 iterations from 0, decay x0.1 at 55000 and 62000.
VOC_LR = LearningRate(0.001, [PiecewiseDecay(0.1, [55000, 62000]), LinearWarmup(1000, 0.0)])


@pytest.mark.parametrize("iteration, expected", [
    (0, 0.0), (1, 0.000001), (500, 0.0005), (999, 0.000999), (1000, 0.001), (54999, 0.001),
    (55000, 0.0001), (61999, 0.0001), (62000, 0.00001), (10 ** 6, 0.00001)])
def test_lr_at_follows_warmup_then_piecewise_decay(iteration, expected):
    assert VOC_LR.lr_at(iteration) == pytest.approx(expected, rel=1e-12, abs=0)


def test_default_start_factor_explicit_values_and_no_schedule():
    lr = LearningRate(0.03, [PiecewiseDecay(milestones=[100]), LinearWarmup(steps=10)])
    assert lr.lr_at(0) == pytest.approx(0.01) and lr.lr_at(5) == pytest.approx(0.02)
    assert lr.lr_at(10) == 0.03 and lr.lr_at(100) == pytest.approx(0.003)
    values = LearningRate(1.0, [PiecewiseDecay(milestones=[10, 20], values=[0.5, 0.2, 0.1])])
    assert [values.lr_at(i) for i in (0, 9, 10, 19, 20, 99)] == [0.5, 0.5, 0.2, 0.2, 0.1, 0.1]
    assert LearningRate(0.2, []).lr_at(12345) == 0.2


def test_warmup_ramps_to_base_lr_even_over_a_milestone_as_paddledetection_did():
    # fluid.layers.linear_lr_warmup(end_lr=base_lr) ignores the decay until warmup ends
    lr = LearningRate(1.0, [PiecewiseDecay(0.5, [5]), LinearWarmup(10, 0.0)])
    assert [lr.lr_at(i) for i in (4, 5, 9, 10)] == pytest.approx([0.4, 0.5, 0.9, 0.5])


def test_scheduler_equals_lr_at_at_every_iteration_and_edge():
    lr = LearningRate(0.004, [PiecewiseDecay(0.1, [30, 45]), LinearWarmup(10, 0.0)])
    scheduler = lr.scheduler()
    assert isinstance(scheduler, paddle.optimizer.lr.LRScheduler)
    for iteration in range(60):
        assert scheduler.iteration == iteration
        assert scheduler() == lr.lr_at(iteration)
        scheduler.step()
    # resuming mid-schedule, exactly on each edge of the VOC recipe
    for edge in (0, 999, 1000, 54999, 55000, 61999, 62000):
        resumed = VOC_LR.scheduler(start_iteration=edge)
        assert resumed() == VOC_LR.lr_at(edge)
        resumed.step()
        assert resumed() == VOC_LR.lr_at(edge + 1)
    restored = lr.scheduler()
    restored.set_state_dict(scheduler.state_dict())
    assert restored.iteration == 60 and restored() == lr.lr_at(60)


def _tiny_program(optimizer_builder, learning_rate):
    """loss = mean(x @ w), w of shape [3, 1] starting at [1, 2, 3]; returns programs and names."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [2, 3], "float32")
        w_init = paddle.nn.initializer.Assign(np.array([[1.0], [2.0], [3.0]], "float32"))
        y = paddle.static.nn.fc(x, 1, weight_attr=paddle.ParamAttr(name="w", initializer=w_init),
                                bias_attr=False)
        loss = paddle.mean(y)
        optimizer = build_optimizer(optimizer_builder, learning_rate)
        optimizer.minimize(loss)
    lr_names = [v.name for v in main.list_vars() if v.name.startswith("learning_rate")]
    return main, startup, loss, optimizer, lr_names


def _run_steps(main, startup, loss, fetch_names, x, steps, scheduler=None):
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    rows = []
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        for _ in range(steps):
            fetched = executor.run(main, feed={"x": x}, fetch_list=[loss] + fetch_names)
            weights = np.array(scope.find_var("w").get_tensor()).ravel().copy()
            rows.append((fetched, weights))
            if scheduler is not None:
                scheduler.step()
    return rows


def _momentum_reference(x, lrs, momentum, l2, clip_norm=None):
    """Momentum + L2 (+ global-norm clip first, as Paddle orders them) in float32 numpy."""
    w = np.array([1.0, 2.0, 3.0], np.float32)
    velocity = np.zeros(3, np.float32)
    history = []
    for lr in lrs:
        grad = x.sum(axis=0).astype(np.float32) / np.float32(x.shape[0])  # d mean(x @ w) / dw
        if clip_norm is not None:
            norm = np.sqrt(np.sum(grad * grad, dtype=np.float32))
            grad = grad * (np.float32(clip_norm) / max(np.float32(clip_norm), norm))
        grad = grad + np.float32(l2) * w
        velocity = np.float32(momentum) * velocity + grad
        w = w - np.float32(lr) * velocity
        history.append(w.copy())
    return history


def test_static_program_trains_with_the_scheduled_lr_momentum_and_l2():
    learning_rate = LearningRate(0.1, [PiecewiseDecay(0.1, [4]), LinearWarmup(2, 0.5)])
    scheduler = learning_rate.scheduler()
    builder = OptimizerBuilder(regularizer={"type": "L2", "factor": 0.01})
    main, startup, loss, optimizer, lr_names = _tiny_program(builder, scheduler)
    assert isinstance(optimizer, paddle.optimizer.Momentum) and len(lr_names) == 1
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows = _run_steps(main, startup, loss, lr_names, x, 6, scheduler)
    lrs = [learning_rate.lr_at(i) for i in range(6)]
    assert lrs == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.01, 0.01])
    fed_lrs = [float(np.asarray(fetched[1]).reshape(-1)[0]) for fetched, _ in rows]
    assert fed_lrs == [float(np.float32(lr)) for lr in lrs]
    expected = _momentum_reference(x, lrs, momentum=0.9, l2=0.01)
    for (_, weights), reference in zip(rows, expected):
        np.testing.assert_allclose(weights, reference, rtol=1e-6)


def test_clip_grad_by_norm_scales_the_gradient_to_the_global_norm():
    builder = OptimizerBuilder(regularizer={"type": "L2", "factor": 0.01}, clip_grad_by_norm=0.5)
    main, startup, loss, optimizer, _ = _tiny_program(builder, 0.05)
    assert isinstance(optimizer._grad_clip, GlobalNormClip)
    op_types = [op.type for op in main.global_block().ops]
    assert op_types.index("squared_l2_norm") < op_types.index("elementwise_mul") < \
        op_types.index("momentum")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows = _run_steps(main, startup, loss, [], x, 3)
    expected = _momentum_reference(x, [0.05] * 3, momentum=0.9, l2=0.01, clip_norm=0.5)
    for (_, weights), reference in zip(rows, expected):
        np.testing.assert_allclose(weights, reference, rtol=1e-6)
    # the clip really changed something: the unclipped gradient norm is sqrt(20.75) > 0.5
    unclipped = _momentum_reference(x, [0.05] * 3, momentum=0.9, l2=0.01)
    assert not np.allclose(unclipped[0], expected[0])


@pytest.mark.parametrize("optimizer, regularizer, expected_class", [
    ({"type": "SGD"}, None, paddle.optimizer.SGD),
    ({"type": "Adam", "beta1": 0.8}, {"type": "L1", "factor": 0.001}, paddle.optimizer.Adam),
    ({"type": "Momentum", "momentum": 0.5, "use_nesterov": True}, {"type": "L2", "factor": 0.0},
     paddle.optimizer.Momentum),
])
def test_build_optimizer_types(optimizer, regularizer, expected_class):
    built = build_optimizer(OptimizerBuilder(optimizer, regularizer), 0.1)
    assert type(built) is expected_class
    assert built.get_lr() == pytest.approx(0.1)


def test_build_optimizer_rejects_a_learning_rate_object_it_cannot_step():
    with pytest.raises(TypeError, match="learning_rate must be a float or a paddle LRScheduler"):
        build_optimizer(OptimizerBuilder(), VOC_LR)


@pytest.mark.parametrize("module, options, path, message", [
    ("OptimizerBuilder", {"optimizer": {"type": "Momentun"}}, ("OptimizerBuilder", "optimizer", "type"),
     "unknown value 'Momentun' for optimizer.type (did you mean 'Momentum'?); valid: Momentum, SGD, Adam"),
    ("OptimizerBuilder", {"optimizer": {"type": "Momentum", "momentun": 0.9}},
     ("OptimizerBuilder", "optimizer", "momentun"),
     "unknown key 'momentun' for argument of Momentum (did you mean 'momentum'?)"),
    ("OptimizerBuilder", {"optimizer": {"type": "Momentum", "momentum": "high"}},
     ("OptimizerBuilder", "optimizer", "momentum"), "key 'optimizer.momentum' must be float"),
    ("OptimizerBuilder", {"regularizer": {"type": "L3", "factor": 0.1}},
     ("OptimizerBuilder", "regularizer", "type"), "unknown value 'L3' for regularizer.type"),
    ("OptimizerBuilder", {"regularizer": {"type": "L2", "factor": -1}},
     ("OptimizerBuilder", "regularizer", "factor"), "key 'regularizer.factor' must be >= 0, got -1.0"),
    ("OptimizerBuilder", {"clip_grad_by_norm": 0}, ("OptimizerBuilder", "clip_grad_by_norm"),
     "key 'clip_grad_by_norm' must be > 0, got 0.0"),
    ("LearningRate", {"schedulers": [LinearWarmup(), PiecewiseDecay()]},
     ("LearningRate", "schedulers", 1), "PiecewiseDecay listed after LinearWarmup would discard"),
    ("LearningRate", {"base_lr": -0.1}, ("LearningRate", "base_lr"), "key 'base_lr' must be >= 0"),
    ("PiecewiseDecay", {"milestones": [10, 5]}, ("PiecewiseDecay", "milestones"),
     "key 'milestones' must be non-negative and strictly increasing, got [10, 5]"),
    ("PiecewiseDecay", {"milestones": [10], "values": [1.0]}, ("PiecewiseDecay", "values"),
     "key 'values' needs len(milestones) + 1 = 2 items, got 1"),
    ("LinearWarmup", {"steps": -1}, ("LinearWarmup", "steps"), "key 'steps' must be >= 0, got -1"),
])
def test_optimizer_modules_check_their_options(module, options, path, message):
    spec = REGISTRY.get(module)
    with pytest.raises(InvalidValue) as error:
        validate_options(spec, options, (module,))
    assert error.value.path == path
    assert error.value.message.startswith(f"{module}: ")
    assert message in error.value.message


def test_optimizer_module_options_validate_and_convert():
    options = validate_options(REGISTRY.get("OptimizerBuilder"),
                               {"optimizer": {"type": "Momentum", "momentum": 1},
                                "regularizer": {"type": "L2", "factor": 0}}, ("OptimizerBuilder",))
    assert options == {"optimizer": {"type": "Momentum", "momentum": 1.0},
                       "regularizer": {"type": "L2", "factor": 0.0}, "clip_grad_by_norm": None}
    assert type(options["optimizer"]["momentum"]) is float
