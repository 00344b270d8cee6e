"""Layer-wise reconstruction: refit the readers of pruned channels by least squares.

After channels are removed, every conv (groups 1) and fc (mul / matmul with a 2-D weight)
that read them sees fewer inputs. Each such reader, in program order, gets new weights W
minimising ||X_pruned W - Y_unpruned||^2 + ridge: X_pruned its input in the pruned model
(with the readers before it already refitted), as im2col rows of sampled output
positions, and Y_unpruned its output in the unpruned model (restricted to the kept output
channels when the reader's own filters are pruned too). As He et al. 2017 (channel
pruning) and ThiNet, with every remaining input channel's weights refitted, not only
rescaled. An intercept is fitted too when the reader's output goes straight into a bias add
(`elementwise_add` of a per-channel parameter: a folded batch norm) or a batch norm: it
goes into that bias (or the batch norm's mean), so a removed channel that carried a
near-constant value is compensated where it matters most.
"""
import numpy as np

from slim.prune.graph import FILTER, INPUT_FILTER, INPUT_WEIGHT
from slim.sourcefree.images import batches

FC_TYPES = ("mul", "matmul", "matmul_v2")
MAX_ROWS = 20000
RIDGE = 1e-3


def _pruned_reader_weights(plan, graph):
    """{weight name: kept output indices or None} of the convs / fcs reading pruned channels."""
    readers, kept_out = set(), {}
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        if group is None or not group_plan.removed:
            continue
        for member in group.members_with_role(INPUT_FILTER, INPUT_WEIGHT):
            readers.add(member.var)  # a conv's input channels or an fc weight's contracted rows
        for member in group.members_with_role(FILTER):
            kept_out[member.var] = np.asarray(group_plan.kept, np.int64) + member.start
    return readers, kept_out


def _readers_in_order(program, names):
    """[(op, kind)] of the forward convs (groups 1) / fcs whose weight is in `names`."""
    found = []
    for op in program.global_block().ops:
        if op.type in ("conv2d",) and op.input("Filter")[0] in names and \
                op.attr("groups") in (1, None):
            found.append((op, "conv"))
        elif op.type in FC_TYPES and op.input("Y")[0] in names:
            found.append((op, "fc"))
    return found


def _conv_geometry(op, weight_shape, input_shape):
    """(strides, (top, bottom, left, right) padding, dilations) of a conv2d op."""
    strides = list(op.attr("strides"))
    dilations = list(op.attr("dilations"))
    paddings = list(op.attr("paddings"))
    algorithm = op.attr("padding_algorithm") if op.has_attr("padding_algorithm") else "EXPLICIT"
    kh, kw = weight_shape[2:]
    if algorithm == "VALID":
        pads = (0, 0, 0, 0)
    elif algorithm == "SAME":
        pads = []
        for size, kernel, stride, dilation in zip(input_shape[2:], (kh, kw), strides, dilations):
            out = -(-size // stride)
            total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
            pads += [total // 2, total - total // 2]
        pads = tuple(pads)
    elif len(paddings) == 2:
        pads = (paddings[0], paddings[0], paddings[1], paddings[1])
    else:
        pads = tuple(paddings)
    return strides, pads, dilations


def conv_rows(inputs, op, weight_shape, outputs, kept, rng, max_rows):
    """(im2col rows [R, C*kh*kw], targets [R, Cout]) at sampled output positions."""
    strides, pads, dilations = _conv_geometry(op, weight_shape, inputs.shape)
    kh, kw = weight_shape[2:]
    padded = np.pad(inputs, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    span_h, span_w = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    n, _, out_h, out_w = outputs.shape
    windows = windows[:, :, :out_h, :out_w]
    count = min(max_rows, n * out_h * out_w)
    flat = rng.choice(n * out_h * out_w, size=count, replace=False)
    ni, rest = np.divmod(flat, out_h * out_w)
    hi, wi = np.divmod(rest, out_w)
    rows = windows[ni, :, hi, wi].reshape(count, -1)
    targets = outputs[ni, :, hi, wi]
    if kept is not None:
        targets = targets[:, kept]
    return rows.astype(np.float64), targets.astype(np.float64)


def _intercept_slot(program, out_name, channels):
    """(kind, param name) where a per-channel intercept of the reader's output can go:
    ('add', bias) for elementwise_add of a [C] parameter on axis 1, ('bn_mean', mean) for a
    batch norm reading it; None otherwise."""
    block = program.global_block()
    readers = [op for op in block.ops if out_name in op.input_arg_names]
    if len(readers) != 1:
        return None
    op = readers[0]
    if op.type == "elementwise_add" and op.input("X") == [out_name]:
        bias = op.input("Y")[0]
        var = block.vars.get(bias)
        if var is not None and var.persistable and [d for d in var.shape if d != 1] == \
                [channels] and (len(var.shape) == 4 or op.attr("axis") in (1, -1 + 2)):
            return ("add", bias)
    if op.type == "batch_norm" and op.input("X") == [out_name]:
        return ("bn_mean", op.input("Mean")[0])
    return None


def solve(rows, targets, ridge=RIDGE):
    """argmin_W ||rows W - targets||^2 + ridge * mean(diag(rows^T rows)) ||W||^2."""
    gram = rows.T @ rows
    penalty = ridge * max(float(np.mean(np.diag(gram))), 1e-12)
    return np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), rows.T @ targets)


def _shift(scope, slot, intercept):
    """Put a per-channel intercept into the bias (or subtract it from the BN mean)."""
    import paddle
    kind, name = slot
    tensor = scope.find_var(name).get_tensor()
    value = np.array(tensor)
    change = intercept.reshape(value.shape) if value.size == intercept.size else intercept
    value = value + change if kind == "add" else value - change
    tensor.set(value.astype(np.float32), paddle.CPUPlace())


def reconstruct(plan, graph, model, scope, student_runner, teacher_runner, samples,
                batch_size=8, max_rows=MAX_ROWS, seed=0, progress=None):
    """Refit, in `scope`, the readers of the pruned channels of `plan` (the unpruned
    program's `graph`); `student_runner` runs the pruned model, `teacher_runner` the
    unpruned one. Returns [{weight, kind, error_before, error_after}] (relative L2 of the
    reader's output on the fitting rows)."""
    import paddle
    names, kept_out = _pruned_reader_weights(plan, graph)
    rng = np.random.default_rng(seed)
    results = []
    for op, kind in _readers_in_order(model.program, names):
        weight_name = op.input("Filter" if kind == "conv" else "Y")[0]
        in_name = op.input("Input" if kind == "conv" else "X")[0]
        out_name = op.output("Output" if kind == "conv" else "Out")[0]
        tensor = scope.find_var(weight_name).get_tensor()
        weight = np.array(tensor)
        if kind == "fc" and (weight.ndim != 2 or op.type != "mul" and (
                op.attr("trans_y") if op.has_attr("trans_y") else False)):
            continue
        rows, targets = [], []
        per_batch = max(1, max_rows // max(1, len(samples)) * batch_size)
        for batch in batches(samples, batch_size):
            (inputs,) = student_runner.run(batch, [in_name])
            (outputs,) = teacher_runner.run(batch, [out_name])
            inputs, outputs = np.asarray(inputs), np.asarray(outputs)
            if kind == "conv":
                r, t = conv_rows(inputs, op, weight.shape, outputs, kept_out.get(weight_name),
                                 rng, per_batch)
            else:
                r = inputs.reshape(-1, weight.shape[0]).astype(np.float64)
                t = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
                if t.shape[1] != weight.shape[1]:
                    break  # the fc's outputs were pruned too: not handled, keep it
                take = rng.choice(len(r), size=min(per_batch, len(r)), replace=False)
                r, t = r[take], t[take]
            rows.append(r)
            targets.append(t)
        else:
            rows, targets = np.concatenate(rows), np.concatenate(targets)
            current = weight.reshape(weight.shape[0], -1).T if kind == "conv" else weight
            before = np.linalg.norm(rows @ current - targets) / max(np.linalg.norm(targets),
                                                                     1e-12)
            slot = _intercept_slot(model.program, out_name, targets.shape[1]) \
                if kind == "conv" else None
            design = np.hstack([rows, np.ones((len(rows), 1))]) if slot else rows
            fitted = solve(design, targets)
            after = np.linalg.norm(design @ fitted - targets) / max(np.linalg.norm(targets),
                                                                   1e-12)
            if after < before:  # never worse on its own rows
                intercept = fitted[-1] if slot else None
                fitted = fitted[:-1] if slot else fitted
                new = fitted.T.reshape(weight.shape) if kind == "conv" else fitted
                tensor.set(new.astype(weight.dtype), paddle.CPUPlace())
                if slot:
                    _shift(scope, slot, intercept)
            results.append({"weight": weight_name, "kind": kind, "rows": int(len(rows)),
                            "error_before": float(before),
                            "error_after": float(min(after, before))})
        if progress:
            progress(len(results))
    return results
