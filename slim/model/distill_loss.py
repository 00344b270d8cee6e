"""The YOLOv3 distillation loss: a student's raw head outputs learn from a teacher's.

As PaddleDetection's static YOLOv3 distillation (slim/distillation/distill.py,
`split_distill`), per output scale, on the channels of each anchor
(x, y, w, h, objectness, classes):

    objectness  sigmoid cross-entropy of the student's objectness logit against the
                teacher's objectness probability sigmoid(t_obj)
    box         x, y: sigmoid cross-entropy against sigmoid(t_x), sigmoid(t_y);
                w, h: |s_w - t_w| + |s_h - t_h|; weighted by sigmoid(t_obj)
    class       sigmoid cross-entropy against sigmoid(t_cls), weighted by sigmoid(t_obj)

Two choices differ from PaddleDetection, both said where they are made:
each cross-entropy has the teacher's own entropy subtracted (it is the Bernoulli
KL divergence: the same gradients, and 0 exactly when the student equals the
teacher, so the logged loss reads as a distance); the objectness target is the
teacher's probability, where PaddleDetection used the hard mask t_obj > 0. The
reduction is the detection loss's (`YOLOv3Head.losses`): summed over cells,
anchors and channels of an image, averaged over the batch, summed over scales,
so a weight of 1 puts both on one scale at any input size.

Ops are appended as classic static ops (`_op`): Paddle 3's paddle.sigmoid / abs / sum
only build PIR programs.
"""


def _op(op_type, x, **attrs):
    """Append the one-input op `op_type` (X -> Out) to the current program; its output."""
    from paddle.base.layer_helper import LayerHelper
    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(dtype=x.dtype)
    helper.append_op(type=op_type, inputs={"X": [x]}, outputs={"Out": [out]}, attrs=attrs)
    return out


def split_output(output, num_anchors):
    """(x, y, w, h, obj, cls) of a raw output [N, A*(5+C), H, W]: the first five [N, A, H*W],
    cls [N, A, C, H*W]."""
    import paddle
    per_anchor = paddle.reshape(output, [0, num_anchors, output.shape[1] // num_anchors, -1])
    return tuple(per_anchor[:, :, i] for i in range(5)) + (per_anchor[:, :, 5:],)


def soft_cross_entropy(student_logit, teacher_logit):
    """Sigmoid cross-entropy of `student_logit` against sigmoid(`teacher_logit`) minus the
    teacher's entropy (the Bernoulli KL divergence; 0 where the logits are equal)."""
    from paddle.nn.functional import binary_cross_entropy_with_logits
    target = _op("sigmoid", teacher_logit)
    return (binary_cross_entropy_with_logits(student_logit, target, reduction="none")
            - binary_cross_entropy_with_logits(teacher_logit, target, reduction="none"))


def _image_sum(value):
    """Sum over every axis but the batch, then the batch mean."""
    import paddle
    per_image = _op("reduce_sum", value, dim=list(range(1, len(value.shape))), keep_dim=False,
                    reduce_all=False)
    return paddle.mean(per_image)


def scale_terms(student, teacher, num_anchors):
    """(objectness, box, class) distillation terms of one output scale (scalars)."""
    import paddle
    s_x, s_y, s_w, s_h, s_obj, s_cls = split_output(student, num_anchors)
    t_x, t_y, t_w, t_h, t_obj, t_cls = split_output(teacher, num_anchors)
    weight = _op("sigmoid", t_obj)
    objectness = _image_sum(soft_cross_entropy(s_obj, t_obj))
    box = _image_sum((soft_cross_entropy(s_x, t_x) + soft_cross_entropy(s_y, t_y)
                      + _op("abs", s_w - t_w) + _op("abs", s_h - t_h)) * weight)
    classes = _image_sum(soft_cross_entropy(s_cls, t_cls) * paddle.unsqueeze(weight, 2))
    return objectness, box, classes


def yolov3_distill_loss(student_outputs, teacher_outputs, num_anchors):
    """The distillation loss of every scale's (objectness, box, class) terms, summed.
    `num_anchors[i]`: anchors of output i."""
    import paddle
    terms = [term for student, teacher, anchors in zip(student_outputs, teacher_outputs, num_anchors)
             for term in scale_terms(student, teacher, anchors)]
    return paddle.add_n(terms)
