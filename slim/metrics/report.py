"""Human-readable text of a metric result, for eval.py and the training log."""
from slim.metrics.coco import COCO_STAT_NAMES


def format_metric_report(result, class_names=None):
    """Lines: mAP, the COCO stats when present, then per-class AP ('-' for no ground truth)."""
    lines = [f"mAP: {result['mAP'] * 100:.2f}"]
    coco_stats = [name for name in COCO_STAT_NAMES if name in result]
    if coco_stats:
        lines.append("  ".join(f"{name} {result[name] * 100:.2f}" for name in coco_stats))
    per_class_ap = result.get("per_class_ap") or []
    if per_class_ap:
        names = [str(class_names[i]) if class_names is not None and i < len(class_names) else str(i)
                 for i in range(len(per_class_ap))]
        width = max(len(name) for name in names)
        lines.append("per-class AP:")
        for name, ap in zip(names, per_class_ap):
            lines.append(f"  {name:<{width}}  {'-' if ap is None else f'{ap * 100:.2f}'}")
    return "\n".join(lines)
