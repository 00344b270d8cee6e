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

from slim.errors import shorten
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
        """The group of `to_dict()` output; a PruneError names the first missing key or bad
        value (never a KeyError, TypeError or IndexError)."""
        if not isinstance(data, dict):
            raise PruneError(f"pruning plan: a group must be a mapping, got {_shown(data)}")
        for name in ("key", "channels_before", "kept"):
            if name not in data:
                raise PruneError(f"pruning plan: group lacks '{name}' (has "
                                 f"{_shown(sorted(map(str, data)))})")
        key = data["key"]
        if not (isinstance(key, (list, tuple)) and len(key) == 3 and isinstance(key[0], str)
                and _is_index(key[1]) and _is_index(key[2])):
            raise PruneError("pruning plan: group key must be [param, axis, start], got "
                             f"{_shown(key)}")
        name = key[0]
        before = data["channels_before"]
        if not _is_index(before) or before < 1:
            raise PruneError(f"pruning plan: group {_shown(name)}: channels_before must be a "
                             f"count >= 1, got {_shown(before)}")
        kept = data["kept"]
        if not isinstance(kept, list) or not all(_is_int(i) for i in kept):
            raise PruneError(f"pruning plan: group {_shown(name)}: kept must be a list of "
                             f"channel indices, got {_shown(kept)}")
        kept = sorted(kept)
        if not kept or kept[0] < 0 or kept[-1] >= before or len(set(kept)) != len(kept):
            raise PruneError(f"pruning plan: group {_shown(name)}: kept indices must be distinct, "
                             f"in [0, {before}) and not empty")
        params = data.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise PruneError(f"pruning plan: group {_shown(name)}: params must be a list of "
                             f"names, got {_shown(params)}")
        return cls((name, key[1], key[2]), list(params), before, kept)


def _is_int(value):
    """A JSON integer (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_index(value):
    return _is_int(value) and value >= 0


def _is_ratio(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _shown(value):
    return shorten(value, 80)


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
        """The plan of `to_dict()` output; a PruneError names what is malformed (any missing
        key or bad value; never a KeyError, TypeError or IndexError)."""
        if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
            raise PruneError("pruning plan: expected a mapping with a 'groups' list")
        version = data.get("version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION or isinstance(version, bool):
            raise PruneError(f"pruning plan format version {_shown(version)} is not supported "
                             f"(expected {PLAN_FORMAT_VERSION})")
        try:
            groups = [GroupPlan.from_dict(group) for group in data["groups"]]
        except PruneError as error:
            reason = str(error).removeprefix("pruning plan: ")
            raise PruneError(f"pruning plan: malformed group ({reason})") from None
        criterion = data.get("criterion", "l1_norm")
        matched = data.get("matched", [])
        skipped = data.get("skipped", {})
        if not isinstance(criterion, str):
            raise PruneError(f"pruning plan: criterion must be a name, got {_shown(criterion)}")
        if not isinstance(matched, list) or not all(isinstance(m, str) for m in matched):
            raise PruneError(f"pruning plan: matched must be a list of names, got {_shown(matched)}")
        if not isinstance(skipped, dict):
            raise PruneError(f"pruning plan: skipped must be a mapping, got {_shown(skipped)}")
        for name in ("ratio", "target_ratio"):
            if not _is_ratio(data.get(name)):
                raise PruneError(f"pruning plan: {name} must be a number or null, got "
                                 f"{_shown(data.get(name))}")
        return cls(groups, criterion, list(matched), data.get("ratio"), data.get("target_ratio"),
                   dict(skipped))

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
