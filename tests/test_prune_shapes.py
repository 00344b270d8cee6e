"""Concrete shapes (`slim.prune.shapes`): a program whose reshape takes its shape from
`shape` + `slice` ops at run time (an attention block's `[N, heads, -1, dim]`, the
PP-OCRv4 recognizer) gets every dim from one run at the given feed shapes, so its FLOPs
count; hand-counted here."""
import warnings

import paddle
import pytest
from test_prune_exact import _conv

from slim.prune.flops import UnknownShapeError, program_flops
from slim.prune.shapes import concrete_program, unknown_vars

CPU = paddle.CPUPlace()


def run_time_reshape():
    """image [-1, 3, -1, -1] -> conv a (8) -> conv b (6, 1x1) -> reshape to [N, 6, H * W]
    with N, H, W read by `shape` + `slice` -> transpose -> fully connected to 4."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [-1, 3, -1, -1], "float32")
        b = _conv(_conv(image, 8, "a"), 6, "b", kernel=1)
        shape = paddle.shape(b)
        tokens = paddle.reshape(b, [shape[0], 6, shape[2] * shape[3]])
        weight = paddle.static.create_parameter([6, 4], "float32", name="fc_w")
        out = paddle.nn.functional.linear(paddle.transpose(tokens, [0, 2, 1]), weight)
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(CPU).run(startup)
    return main, scope, out


def test_one_run_gives_every_dim_and_the_flops_count():
    program, scope, out = run_time_reshape()
    with pytest.raises(UnknownShapeError):
        program_flops(program)
    counted = concrete_program(program, scope, {"image": [1, 3, 12, 10]})
    block = counted.global_block()
    assert list(block.var(out.name).shape) == [-1, 120, 4]  # batch axis stays as declared
    assert not [name for name in unknown_vars(counted) if "tmp_1" not in name[-5:]]
    # conv a 8*3*3*3*12*10, conv b 6*8*12*10, matmul 120*4 outputs x 6, H * W (1 element)
    assert program_flops(counted) == 8 * 27 * 120 + 6 * 8 * 120 + 120 * 4 * 6 + 1
    assert list(program.global_block().var(out.name).shape)[1] == -1  # the input is unchanged
    # another size counts at that size
    assert program_flops(concrete_program(program, scope, {"image": [1, 3, 6, 4]})) == \
        8 * 27 * 24 + 6 * 8 * 24 + 24 * 4 * 6 + 1


def test_compile_time_inference_alone_leaves_the_reshape_unknown():
    """Why the run is needed: with the feed shape put in and shapes inferred at compile time,
    the reshape fed by `shape` + `slice` still has unknown dims."""
    program, _, out = run_time_reshape()
    copy = program.clone()
    block = copy.global_block()
    block.var("image").desc.set_shape([-1, 3, 12, 10])
    for op in block.ops:
        op.desc.infer_shape(block.desc)
    assert -1 in list(block.var(out.name).shape)[1:]


def test_a_failing_run_is_one_line():
    from slim.prune.errors import PruneError
    program, scope, _ = run_time_reshape()
    with pytest.raises(PruneError, match=r"cannot run the program once at feed shapes"):
        concrete_program(program, scope, {"image": [1, 5, 12, 10]})  # 5 channels for a 3-ch conv
