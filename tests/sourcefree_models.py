"""Tiny exported models with planted channels, and images for them, shared by the
source-free pruning tests.

`planted_model(dir)`: image [N, 3, 8, 8] -> conv1 (4 filters, bias: the folded batch norm
of an exported model) -> relu -> conv2 (4 -> 3, bias) -> relu -> global mean -> fc (3 -> 5)
-> softmax. conv1's channel 0 has the largest filters but a large negative bias, so relu
outputs 0 for any input in [0, 1]: dead. Channel 1 has the smallest filters but a large
bias that conv2 reads: vital. l1_norm keeps the dead channel and removes the vital one.
"""
import os
import warnings

import cv2
import numpy as np
import paddle

CPU = paddle.CPUPlace()
SIZE = 8
DEAD, VITAL = 0, 1


def _set(scope, name, value):
    scope.find_var(name).get_tensor().set(np.asarray(value, np.float32), CPU)


def planted_model(model_dir, seed=0):
    """Save the planted model as model_dir/inference.pdmodel + .pdiparams; returns names."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [None, 3, SIZE, SIZE], "float32")
        hidden = paddle.nn.functional.relu(paddle.static.nn.conv2d(
            image, 4, 3, padding=1, param_attr=paddle.ParamAttr(name="conv1_w"),
            bias_attr=paddle.ParamAttr(name="conv1_b")))
        second = paddle.nn.functional.relu(paddle.static.nn.conv2d(
            hidden, 3, 3, padding=1, param_attr=paddle.ParamAttr(name="conv2_w"),
            bias_attr=paddle.ParamAttr(name="conv2_b")))
        pooled = paddle.mean(second, axis=[2, 3])
        logits = paddle.static.nn.fc(pooled, 5, weight_attr=paddle.ParamAttr(name="fc_w"),
                                     bias_attr=paddle.ParamAttr(name="fc_b"))
        probs = paddle.nn.functional.softmax(logits)
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    rng = np.random.default_rng(seed)
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        conv1 = rng.uniform(0.2, 0.4, (4, 3, 3, 3)) * rng.choice([-1, 1], (4, 3, 3, 3))
        conv1[DEAD] = 1.0 * np.sign(conv1[DEAD])      # largest filters ...
        conv1[VITAL] *= 0.05                           # smallest filters ...
        bias1 = np.array([-20.0, 3.0, 0.5, 0.5])       # ... dead / vital by the bias
        _set(scope, "conv1_w", conv1)
        _set(scope, "conv1_b", bias1)
        _set(scope, "conv2_w", rng.standard_normal((3, 4, 3, 3)) * 0.3)
        _set(scope, "conv2_b", [0.1, 0.1, 0.1])
        _set(scope, "fc_w", rng.standard_normal((3, 5)))
        _set(scope, "fc_b", np.zeros(5))
        paddle.static.save_inference_model(os.path.join(model_dir, "inference"), [image],
                                           [probs], executor, program=main)
    return {"dir": model_dir, "conv1": "conv1_w", "output": probs.name}


def write_images(directory, count, size=16, seed=0, broken=0):
    """`count` random colour PNGs (and `broken` files that are not images) in directory."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = rng.integers(0, 256, (size, size + index % 3, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(directory, f"img{index:03d}.png"), image)
    for index in range(broken):
        with open(os.path.join(directory, f"broken{index}.jpg"), "wb") as handle:
            handle.write(b"not an image")
    return directory


def affine_model(model_dir, seed=0):
    """image -> conv (no bias) -> learned affine (x * a + b, a and b [1] parameters, as
    PP-LCNetV3's learnable affine blocks) -> hard_swish -> conv -> mean: an exported model
    without batch norm whose scalars must train too."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [None, 3, SIZE, SIZE], "float32")
        hidden = paddle.static.nn.conv2d(image, 6, 3, padding=1, bias_attr=False,
                                         param_attr=paddle.ParamAttr(name="conv1_w"))
        scale = paddle.static.create_parameter([1], "float32", name="affine_scale",
                                               default_initializer=paddle.nn.initializer.Constant(1.5))
        shift = paddle.static.create_parameter([1], "float32", name="affine_bias",
                                               default_initializer=paddle.nn.initializer.Constant(0.2))
        hidden = paddle.nn.functional.hardswish(hidden * scale + shift)
        out = paddle.static.nn.conv2d(hidden, 2, 3, padding=1, bias_attr=False,
                                      param_attr=paddle.ParamAttr(name="conv2_w"))
        pooled = paddle.mean(out, axis=[2, 3])
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        rng = np.random.default_rng(seed)
        _set(scope, "conv1_w", rng.standard_normal((6, 3, 3, 3)) * 0.4)
        _set(scope, "conv2_w", rng.standard_normal((2, 6, 3, 3)) * 0.3)
        paddle.static.save_inference_model(os.path.join(model_dir, "inference"), [image],
                                           [pooled], executor, program=main)
    return {"dir": model_dir}
