"""The pruning plan: which channels of which group stay. Plain data, JSON round-trip.

A plan is separate from applying it: `slim.prune.apply.apply_plan` rewrites
programs and the scope from a plan, and a checkpoint stores the plan (not the
pruned program) so a resumed run replays it on freshly built programs.

A group is identified by its key, the first producing conv weight segment
(param name, axis, start), which is the same in the train, eval and infer
programs of one model.
"""
import dataclasses
import json

from slim.prune.errors import PruneError

PLAN_FORMAT_VERSION = 1


@dataclasses.dataclass
class GroupPlan:
    """Kept channels of one channel group.

    key: (param, axis, start) of the group's first producing conv weight segment.
    params: names of the parameters in the group (for reports and checks).
    channels_before: the group's channel count when the plan was made.
    kept: sorted indices (0 .. channels_before - 1) of the channels that stay.
    """
    key: tuple
    params: list
    channels_before: int
    kept: list

    @property
    def channels_after(self):
        return len(self.kept)

    @property
    def removed(self):
        """Sorted indices of the removed channels."""
        kept = set(self.kept)
        return [i for i in range(self.channels_before) if i not in kept]

    def to_dict(self):
        return {"key": list(self.key), "params": list(self.params),
                "channels_before": int(self.channels_before),
                "channels_after": int(self.channels_after),
                "kept": [int(i) for i in self.kept]}

    @classmethod
    def from_dict(cls, data):
        key = tuple(data["key"])
        if len(key) != 3:
            raise PruneError("pruning plan: group key must be [param, axis, start], got "
                             f"{data['key']!r}")
        kept = sorted(int(i) for i in data["kept"])
        before = int(data["channels_before"])
        if not kept or kept[0] < 0 or kept[-1] >= before or len(set(kept)) != len(kept):
            raise PruneError(f"pruning plan: group {key[0]}: kept indices must be distinct, in "
                             f"[0, {before}) and not empty")
        return cls((str(key[0]), int(key[1]), int(key[2])), list(data.get("params", [])),
                   before, kept)


@dataclasses.dataclass
class PrunePlan:
    """What to prune: kept channels per group, plus how they were chosen.

    criterion: importance criterion used (l1_norm, fpgm, bn_scale).
    matched: the selected parameter names.
    ratio: the uniform ratio (fraction of each group's channels removed), if one was used.
    target_ratio: the FLOPs fraction asked to be removed, if a FLOPs target was used.
    skipped: selected conv weights left unpruned -> why (e.g. a fixed yolo output layout).
    """
    groups: list
    criterion: str = "l1_norm"
    matched: list = dataclasses.field(default_factory=list)
    ratio: object = None
    target_ratio: object = None
    skipped: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return {"version": PLAN_FORMAT_VERSION, "criterion": self.criterion,
                "matched": list(self.matched), "ratio": self.ratio,
                "target_ratio": self.target_ratio, "skipped": dict(self.skipped),
                "groups": [group.to_dict() for group in self.groups]}

    @classmethod
    def from_dict(cls, data):
        """The plan of `to_dict()` output; a PruneError names what is malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
            raise PruneError("pruning plan: expected a mapping with a 'groups' list")
        version = data.get("version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise PruneError(f"pruning plan format version {version} is not supported "
                             f"(expected {PLAN_FORMAT_VERSION})")
        try:
            groups = [GroupPlan.from_dict(group) for group in data["groups"]]
        except (KeyError, TypeError, ValueError) as error:
            raise PruneError(f"pruning plan: malformed group ({type(error).__name__}: "
                             f"{error})") from None
        return cls(groups, data.get("criterion", "l1_norm"), list(data.get("matched", [])),
                   data.get("ratio"), data.get("target_ratio"), dict(data.get("skipped", {})))

    def to_json(self, indent=None):
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def save(self, path):
        """Write the plan as JSON to `path`."""
        with open(path, "w") as handle:
            handle.write(self.to_json(indent=1))

    @classmethod
    def load(cls, path):
        with open(path) as handle:
            return cls.from_json(handle.read())
