"""A backbone as an image classifier: the detector's backbone (its parameter names and
widths), a global average pool and a fully connected layer, as static train and test
programs (`slim.runs.pretrain` trains it on object crops).

Imports: paddle, slim.paddle_env.
"""


def build_classifier_program(backbone, size, num_labels):
    """Train and test programs of `backbone` + global average pool + fc over `num_labels`.

    Returns (train program, test program, startup program, loss var, logits var); the
    backbone's parameters keep the detector's names.
    """
    import paddle

    import slim.paddle_env
    main, startup = paddle.static.Program(), paddle.static.Program()
    slim.paddle_env.assert_classic_program(main)
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, size, size], "float32")
        label = paddle.static.data("label", [-1, 1], "int64")
        deepest = backbone(image, is_test=False)[-1]
        pooled = paddle.mean(deepest, axis=[2, 3])
        logits = paddle.static.nn.fc(pooled, num_labels,
                                     weight_attr=paddle.ParamAttr(name="pretrain_fc_weights"),
                                     bias_attr=paddle.ParamAttr(name="pretrain_fc_offset"))
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, label))
    return main, main.clone(for_test=True), startup, loss, logits


def backbone_var_names(program):
    """The backbone's variables in a classifier program: its parameters (conv weights and
    batch norm scale, offset, mean and variance, which Paddle holds as parameters) without
    the classifier layer's."""
    return sorted(p.name for p in program.global_block().all_parameters()
                  if not p.name.startswith("pretrain_fc"))
