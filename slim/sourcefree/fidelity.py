"""How closely a pruned model reproduces the unpruned one on held-out images.

Per fetched output: the relative L2 error ||pruned - unpruned|| / ||unpruned|| and the
cosine similarity, each the median over images (and the worst image's); plus a task
agreement where the output kind is known or given (`task`):

    classify   top-1 agreement: the argmax of the last axis is the same
    sequence   identical CTC sequences: per time step argmax, repeats merged, blank
               (index 0) removed, the whole sequence equal
    dense      IoU of the maps thresholded at `threshold` (default 0.3: DB text maps)
    detect     recall of the unpruned model's boxes (score >= threshold, rows of
               [class, score, x1, y1, x2, y2]) by pruned boxes of the same class at IoU 0.5

`task="auto"` guesses from the output: [N, C] -> classify, [N, T, C] -> sequence,
[N, 1, H, W] -> dense, [M, 6] -> detect; otherwise only the errors are reported.
A fidelity whose agreement is below POOR_AGREEMENT (or, without a task, whose error is
above POOR_ERROR) gets a one-line warning.
"""
import numpy as np

from slim.metrics.voc import box_iou

TASKS = ("auto", "classify", "sequence", "dense", "detect")
POOR_AGREEMENT = 0.9
POOR_ERROR = 0.3
DEFAULT_THRESHOLD = {"dense": 0.3, "detect": 0.5}
BOX_IOU = 0.5


def guess_task(shape):
    """The task an output of per-image `shape` (no batch axis) most likely is, or None."""
    shape = tuple(shape)
    if len(shape) == 1:
        return "classify"
    if len(shape) == 2 and shape[-1] == 6:
        return "detect"
    if len(shape) == 2:
        return "sequence"
    if len(shape) == 3 and shape[0] == 1:
        return "dense"
    return None


def ctc_decode(scores):
    """Per time step argmax, repeats merged, blanks (0) removed -> tuple of indices."""
    best = np.asarray(scores).argmax(axis=-1)
    merged = [int(k) for i, k in enumerate(best) if i == 0 or k != best[i - 1]]
    return tuple(k for k in merged if k != 0)


def agreement(task, reference, candidate, threshold=None):
    """Agreement in [0, 1] of one image's output `candidate` with `reference` under `task`
    (None when the image gives nothing to compare, e.g. no reference box)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if task == "classify":
        return float(reference.reshape(-1).argmax() == candidate.reshape(-1).argmax())
    if task == "sequence":
        return float(ctc_decode(reference) == ctc_decode(candidate))
    if task == "dense":
        threshold = DEFAULT_THRESHOLD["dense"] if threshold is None else threshold
        ref, cand = reference > threshold, candidate > threshold
        union = np.logical_or(ref, cand).sum()
        return 1.0 if union == 0 else float(np.logical_and(ref, cand).sum() / union)
    if task == "detect":
        threshold = DEFAULT_THRESHOLD["detect"] if threshold is None else threshold
        ref = reference.reshape(-1, 6)
        cand = candidate.reshape(-1, 6)
        ref, cand = ref[ref[:, 1] >= threshold], cand[cand[:, 1] >= threshold]
        if len(ref) == 0:
            return None
        found = 0
        for box in ref:
            same = cand[cand[:, 0] == box[0]]
            if len(same) and box_iou(box[2:], same[:, 2:], pixel_offset=0).max() >= BOX_IOU:
                found += 1
        return found / len(ref)
    raise ValueError(f"unknown task {task!r}")


def compare_outputs(reference, candidate, task="auto", threshold=None):
    """Fidelity of one output: `reference` and `candidate` are lists of per-image arrays."""
    errors, cosines, agreements = [], [], []
    kind = guess_task(np.asarray(reference[0]).shape) if task == "auto" else task
    for ref, cand in zip(reference, candidate):
        ref = np.asarray(ref, np.float64).reshape(-1)
        cand = np.asarray(cand, np.float64).reshape(-1)
        if ref.shape != cand.shape:  # e.g. a different number of detected boxes
            errors.append(float("nan"))
            cosines.append(float("nan"))
        else:
            norm = np.linalg.norm(ref)
            errors.append(float(np.linalg.norm(cand - ref) / max(norm, 1e-12)))
            denominator = max(norm * np.linalg.norm(cand), 1e-12)
            cosines.append(float(np.dot(ref, cand) / denominator))
    if kind is not None:
        for ref, cand in zip(reference, candidate):
            value = agreement(kind, ref, cand, threshold)
            if value is not None:
                agreements.append(value)
    finite = [e for e in errors if np.isfinite(e)]
    record = {"images": len(reference), "task": kind,
              "relative_l2_median": float(np.median(finite)) if finite else None,
              "relative_l2_worst": float(max(finite)) if finite else None,
              "cosine_median": float(np.median([c for c in cosines if np.isfinite(c)]))
              if finite else None,
              "agreement": float(np.mean(agreements)) if agreements else None,
              "agreement_images": len(agreements)}
    return record


def fidelity_report(reference_outputs, candidate_outputs, task="auto", threshold=None):
    """{output name: compare_outputs(...)} plus 'summary': the worst agreement and error."""
    outputs = {name: compare_outputs(reference_outputs[name], candidate_outputs[name], task,
                                     threshold)
               for name in reference_outputs}
    agreements = [r["agreement"] for r in outputs.values() if r["agreement"] is not None]
    errors = [r["relative_l2_median"] for r in outputs.values()
              if r["relative_l2_median"] is not None]
    return {"outputs": outputs,
            "agreement": min(agreements) if agreements else None,
            "relative_l2": max(errors) if errors else None}


def poor_fidelity_warning(report, what="the pruned model"):
    """The one warning line for a poor fidelity report, or None."""
    agreement, error = report.get("agreement"), report.get("relative_l2")
    images = max((r["images"] for r in report["outputs"].values()), default=0)
    if agreement is not None and agreement < POOR_AGREEMENT:
        task = next((r["task"] for r in report["outputs"].values() if r["agreement"] is not None),
                    "")
        return (f"warning: {what} agrees with the unpruned model on only {100 * agreement:.0f}% "
                f"of {images} held-out images ({task}); prune less, use --criterion activation, "
                "--reconstruct or --recover_iters N")
    if agreement is None and error is not None and error > POOR_ERROR:
        return (f"warning: {what}'s outputs differ from the unpruned model's by "
                f"{100 * error:.0f}% (relative L2, median of {images} held-out images); prune "
                "less, use --criterion activation, --reconstruct or --recover_iters N")
    return None


def format_fidelity(report, title="fidelity on held-out images vs the unpruned model"):
    """The fidelity report as a table: one row per output."""
    rows = [("output", "task", "rel. L2 (median / worst)", "cosine", "agreement")]
    for name, record in report["outputs"].items():
        error = (f"{record['relative_l2_median']:.4f} / {record['relative_l2_worst']:.4f}"
                 if record["relative_l2_median"] is not None else "n/a")
        cosine = f"{record['cosine_median']:.4f}" if record["cosine_median"] is not None else "n/a"
        agree = (f"{100 * record['agreement']:.1f}% of {record['agreement_images']}"
                 if record["agreement"] is not None else "n/a")
        rows.append((name, record["task"] or "-", error, cosine, agree))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title]
    for row in rows:
        lines.append("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)
