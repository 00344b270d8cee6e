"""Static-graph building blocks shared by the backbone and the head.

Every parameter gets an explicit name (FACTS.md §1), so programs built
separately (train, eval) share one scope by name. In a classic program they are
Paddle's classic layers (`paddle.static.nn.conv2d` / `batch_norm`, the
`multiclass_nms3` op through LayerHelper), which PIR refuses; in a PIR program
(`paddle.framework.in_pir_mode()`, Paddle 3) the same parameters (names, shapes,
initializers, regularizers, learning rates) are made with `create_parameter` and fed
to the functional ops, and NMS is `_C_ops.multiclass_nms3` (`bench/pir_train.py`
measured which APIs work there).
"""
import paddle
from paddle.base.layer_helper import LayerHelper


def named_batch_norm(conv, act, names, norm_decay, is_test, learning_rate=1.0,
                     use_global_stats=False):
    """Batch norm with the given names for (scale, offset, mean, variance); `learning_rate`
    scales the scale's and offset's updates, `use_global_stats` normalizes with the moving
    statistics in training too."""
    scale_name, offset_name, mean_name, variance_name = names
    decay = paddle.regularizer.L2Decay(norm_decay)
    if _in_pir():
        return _pir_batch_norm(
            conv, act, is_test,
            paddle.ParamAttr(name=scale_name, learning_rate=learning_rate, regularizer=decay),
            paddle.ParamAttr(name=offset_name, learning_rate=learning_rate, regularizer=decay),
            mean_name, variance_name, use_global_stats)
    return paddle.static.nn.batch_norm(
        conv, act=act, is_test=is_test,
        param_attr=paddle.ParamAttr(name=scale_name, learning_rate=learning_rate, regularizer=decay),
        bias_attr=paddle.ParamAttr(name=offset_name, learning_rate=learning_rate, regularizer=decay),
        moving_mean_name=mean_name, moving_variance_name=variance_name,
        use_global_stats=use_global_stats)


def conv_bn_relu(input, num_filters, filter_size, stride, padding, name, norm_decay, is_test,
                 groups=1, conv_decay=None):
    """MobileNet conv (no bias) + batch norm + relu: `<name>_weights`, `<name>_bn_{scale,...}`.

    `conv_decay`: L2 factor of the conv weight (its own regularizer, which Paddle uses instead
    of the optimizer's); None leaves it to the optimizer's global regularizer.
    """
    regularizer = None if conv_decay is None else paddle.regularizer.L2Decay(conv_decay)
    conv = _conv2d(
        input, num_filters, filter_size, stride=stride, padding=padding, groups=groups,
        param_attr=paddle.ParamAttr(name=name + "_weights",
                                    initializer=paddle.nn.initializer.KaimingUniform(),
                                    regularizer=regularizer),
        bias_attr=False)
    bn = name + "_bn"
    names = (bn + "_scale", bn + "_offset", bn + "_mean", bn + "_variance")
    return named_batch_norm(conv, "relu", names, norm_decay, is_test)


def conv_bn_leaky(input, num_filters, filter_size, stride, padding, name, norm_decay, is_test):
    """YOLO conv (no bias) + batch norm + leaky relu(0.1): `<name>.conv.weights`, `<name>.bn.*`."""
    conv = _conv2d(
        input, num_filters, filter_size, stride=stride, padding=padding,
        param_attr=paddle.ParamAttr(name=name + ".conv.weights"), bias_attr=False)
    bn = name + ".bn"
    names = (bn + ".scale", bn + ".offset", bn + ".mean", bn + ".var")
    out = named_batch_norm(conv, None, names, norm_decay, is_test)
    return paddle.nn.functional.leaky_relu(out, negative_slope=0.1)


def conv_with_bias(input, num_filters, name, initial_bias=None):
    """Plain 1x1 conv with bias, no norm: `<name>.conv.weights`, `<name>.conv.bias`.

    `initial_bias`: the bias's initial values (a list of num_filters floats); default zeros.
    """
    bias_initializer = None
    if initial_bias is not None:
        bias_initializer = paddle.nn.initializer.Assign([float(v) for v in initial_bias])
    return _conv2d(
        input, num_filters, 1,
        param_attr=paddle.ParamAttr(name=name + ".conv.weights"),
        bias_attr=paddle.ParamAttr(name=name + ".conv.bias", initializer=bias_initializer,
                                   regularizer=paddle.regularizer.L2Decay(0.)))


def upsample_nearest_2x(input):
    """2x nearest-neighbour upsampling."""
    return paddle.nn.functional.interpolate(input, scale_factor=2, mode="nearest")


def multiclass_nms(bboxes, scores, nms):
    """Append Paddle's multiclass_nms3 op; returns (detections, detections per image).

    bboxes [N, M, 4] (x1, y1, x2, y2), scores [N, C, M]; `nms` a MultiClassNMS.
    """
    if _in_pir():
        detections, _, detections_per_image = paddle._C_ops.multiclass_nms3(
            bboxes, scores, None, float(nms.score_threshold), int(nms.nms_top_k),
            int(nms.keep_top_k), float(nms.nms_threshold), bool(nms.normalized), 1.0,
            int(nms.background_label))
        detections.stop_gradient = detections_per_image.stop_gradient = True
        return detections, detections_per_image
    helper = LayerHelper("multiclass_nms3")
    detections = helper.create_variable_for_type_inference(dtype=bboxes.dtype)
    index = helper.create_variable_for_type_inference(dtype="int32")
    detections_per_image = helper.create_variable_for_type_inference(dtype="int32")
    helper.append_op(
        type="multiclass_nms3",
        inputs={"BBoxes": bboxes, "Scores": scores},
        attrs={"background_label": int(nms.background_label),
               "score_threshold": float(nms.score_threshold),
               "nms_top_k": int(nms.nms_top_k),
               "nms_threshold": float(nms.nms_threshold),
               "keep_top_k": int(nms.keep_top_k),
               "normalized": bool(nms.normalized),
               "nms_eta": 1.0},
        outputs={"Out": detections, "Index": index, "NmsRoisNum": detections_per_image})
    for var in (detections, index, detections_per_image):
        var.stop_gradient = True
    return detections, detections_per_image


def _in_pir():
    in_pir = getattr(paddle.framework, "in_pir_mode", None)
    return bool(in_pir and in_pir())


def _conv2d(input, num_filters, filter_size, stride=1, padding=0, groups=None, param_attr=None,
            bias_attr=None):
    """`paddle.static.nn.conv2d` (classic), or the same parameters + functional conv2d (PIR;
    the classic layer's default initializer: Normal(0, sqrt(2 / (k * k * C_in))))."""
    if not _in_pir():
        return paddle.static.nn.conv2d(input, num_filters, filter_size, stride=stride,
                                       padding=padding, groups=groups, param_attr=param_attr,
                                       bias_attr=bias_attr)
    channels, groups = input.shape[1], groups or 1
    std = (2.0 / (filter_size * filter_size * channels)) ** 0.5
    weight = paddle.static.create_parameter(
        [num_filters, channels // groups, filter_size, filter_size], "float32", attr=param_attr,
        default_initializer=paddle.nn.initializer.Normal(0.0, std))
    bias = None
    if bias_attr is not False:
        bias = paddle.static.create_parameter([num_filters], "float32", attr=bias_attr,
                                              is_bias=True)
    return paddle.nn.functional.conv2d(input, weight, bias, stride, padding, groups=groups)


def _pir_batch_norm(input, act, is_test, scale_attr, offset_attr, mean_name, variance_name,
                    use_global_stats):
    """The classic batch_norm layer's parameters (scale 1, offset 0, moving mean 0 and
    variance 1, not trained; momentum 0.9, epsilon 1e-5) with the functional op (PIR)."""
    channels = [input.shape[1]]
    one, zero = paddle.nn.initializer.Constant(1.0), paddle.nn.initializer.Constant(0.0)
    scale = paddle.static.create_parameter(channels, "float32", attr=scale_attr,
                                           default_initializer=one)
    offset = paddle.static.create_parameter(channels, "float32", attr=offset_attr, is_bias=True)
    statistics = []
    for name, initializer in ((mean_name, zero), (variance_name, one)):
        value = paddle.static.create_parameter(
            channels, "float32", attr=paddle.ParamAttr(name=name, initializer=initializer,
                                                       trainable=False))
        value.stop_gradient = True
        statistics.append(value)
    out = paddle.nn.functional.batch_norm(
        input, *statistics, scale, offset, training=not is_test, momentum=0.9, epsilon=1e-5,
        use_global_stats=True if use_global_stats else None)
    return getattr(paddle.nn.functional, act)(out) if act else out

