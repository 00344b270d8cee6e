"""Channel-dependency analysis of a classic static Program: coupled channel groups.

Starting from every conv weight's output and input channels, the analysis
asks each op's rule (`slim.prune.ops`) which other channel ranges must lose
the same channels, until nothing new is reached. Concat makes an input's
channels a slice of the output, so channel ranges are split at every offset
that reaches them (partition refinement), and then equal ranges are merged
(union-find). Each connected set is a `ChannelGroup`: one channel index
space shared by all its members, e.g. a conv's filters, its batch norm's
scale/offset/mean/variance, the activations, their gradients and momentum
velocities, the depthwise conv after it, the slice of a concat it feeds and
the matching input slice of every consumer conv. Two convs whose outputs are
summed land in one group.

A group that reaches a fixed layout (a yolo output feeding the loss, a
program input) is not prunable; one that reaches an op without a rule is
blocked, and the reason names the op.
"""
import collections
import dataclasses

from slim.prune.errors import PruneError
from slim.prune.flops import is_forward_role
from slim.prune.op_specs import CHANNEL_PRESERVING, CONV, CONV_TRANSPOSE, OP_SPECS, op_table, spec_for
from slim.prune.ops import MATMUL_TYPES, Fixed, Link, OpView, Segment, Unsupported, conv_kind

# Member roles, by what the member is to the group's channels.
FILTER = "filter"                # conv weight producing the channels (axis 0)
DEPTHWISE_FILTER = "depthwise_filter"  # depthwise conv weight carrying them (axis 0)
INPUT_FILTER = "input_filter"    # consumer conv weight reading them (axis 1)
INPUT_WEIGHT = "input_weight"    # fully connected weight reading them (its contracted rows)
BN_SCALE, BN_OFFSET, BN_MEAN, BN_VARIANCE = "bn_scale", "bn_offset", "bn_mean", "bn_variance"
PARAM = "param"                  # another parameter (a conv bias, a prelu alpha)
ACCUMULATOR = "accumulator"      # persistable non-parameter (optimizer velocity, moments)
ACTIVATION = "activation"        # a non-persistable tensor (activations, gradients)


class _OpAttrs:
    """Lazy attribute access for OpView (reading every attr of every op is slow)."""
    __slots__ = ("_desc",)

    def __init__(self, desc):
        self._desc = desc

    def get(self, name, default=None):
        if self._desc.has_attr(name):
            return self._desc.attr(name)
        return default


@dataclasses.dataclass(frozen=True)
class ConvInfo:
    """A forward conv op: its weight, input, output and kind (conv, depthwise, grouped,
    transpose)."""
    op_index: int
    op_type: str
    kind: str
    weight: str
    input: str
    output: str
    groups: int

    @property
    def output_axis(self):
        """The weight axis that holds the output channels."""
        return 1 if self.kind == "transpose" else 0

    @property
    def input_axis(self):
        return 0 if self.kind == "transpose" else 1


def _tensor_var_types():
    from paddle.base import core
    types = core.VarDesc.VarType
    return {types.LOD_TENSOR, types.SELECTED_ROWS}


class ProgramIndex:
    """The global block of a program indexed for the analysis: op views, var shapes,
    which ops touch and produce each var, persistables, parameters, convs, batch norms."""

    def __init__(self, program, table=OP_SPECS):
        block = program.global_block()
        self.program = program
        self.table = table  # the op specs (rules, kinds ...) this index was made with
        self.block = block
        self.shapes, self.persistable = {}, set()
        tensor_types = _tensor_var_types()
        for desc in block.desc.all_vars():
            name = desc.name()
            if desc.persistable():
                self.persistable.add(name)
            if desc.type() in tensor_types:  # feed/fetch lists, readers: no channels
                self.shapes[name] = tuple(desc.shape())
        self.parameters = {param.name for param in block.all_parameters()}
        self.ops = []
        self.last_producer = {}  # var -> OpView of the last op writing it (filled in order)
        self.touching = collections.defaultdict(list)  # var -> op indices (in or out)
        self.producers = collections.defaultdict(list)  # var -> op indices (out)
        self.readers = collections.defaultdict(list)  # var -> op indices (in)
        for index, op in enumerate(block.ops):
            desc = op.desc
            slots = {}
            for slot in desc.input_names():
                slots[slot] = list(desc.input(slot))
                for name in slots[slot]:
                    if index not in self.readers[name]:
                        self.readers[name].append(index)
            for slot in desc.output_names():
                names = list(desc.output(slot))
                slots[slot] = names
                for name in names:
                    self.producers[name].append(index)
            view = OpView(desc.type(), index, slots, _OpAttrs(desc), self.shapes,
                          self.last_producer)
            self.ops.append(view)
            for slot in desc.output_names():
                self.last_producer.update((name, view) for name in desc.output(slot))
            seen = set()
            for names in slots.values():
                for name in names:
                    if name not in seen:
                        seen.add(name)
                        self.touching[name].append(index)
        self.convs = self._find_convs()
        self.conv_by_weight = {conv.weight: conv for conv in self.convs}
        self.batch_norms = self._find_batch_norms()

    def _find_convs(self):
        convs = []
        for op in self.ops:
            spec = self.table.find(op.type)
            if spec is None or spec.kind not in (CONV, CONV_TRANSPOSE):
                continue
            weight, inp, out = op.var("Filter"), op.var("Input"), op.var("Output")
            if weight is None or inp is None or out is None:
                continue
            groups = op.attr("groups", 1) or 1
            if spec.kind == CONV_TRANSPOSE:
                kind = "transpose"
            else:
                try:
                    kind = conv_kind(op)
                except (KeyError, IndexError):
                    continue
            convs.append(ConvInfo(op.index, op.type, kind, weight, inp, out, groups))
        return convs

    def _find_batch_norms(self):
        roles = {}
        for op in self.ops:
            if op.type not in ("batch_norm", "sync_batch_norm"):
                continue
            for slot, role in (("Scale", BN_SCALE), ("Bias", BN_OFFSET), ("Mean", BN_MEAN),
                               ("Variance", BN_VARIANCE)):
                name = op.var(slot)
                if name:
                    roles[name] = role
        return roles

    def kind_of(self, op):
        """The spec kind (CONV, CHANNEL_PRESERVING, ...) of `op`; None for an op without a spec."""
        spec = self.table.find(op.type)
        return spec.kind if spec is not None else None

    def forward_readers(self, var):
        """The forward ops (OpViews) that read `var`, in program order."""
        return [self.ops[i] for i in self.readers.get(var, ())
                if is_forward_role(self.ops[i].attr("op_role"))]

    def is_program_input(self, var):
        """A non-persistable var that no op produces: fed from outside."""
        return var not in self.persistable and not self.producers.get(var)


@dataclasses.dataclass
class ChannelGroup:
    """A set of channel ranges pruned together with one index set.

    Every member is a `Segment` (var, axis, start, length=size): channel i of the
    group is channel start + i of that var's axis. `roles` says what each member is
    (FILTER, BN_SCALE, ...); `fixed` and `unknown` hold the reasons the group cannot
    be pruned.
    """
    id: int
    size: int
    members: list
    roles: dict
    fixed: list = dataclasses.field(default_factory=list)
    unknown: list = dataclasses.field(default_factory=list)

    def members_with_role(self, *roles):
        return [m for m in self.members if self.roles[m] in roles]

    @property
    def filters(self):
        """Conv weights (segments) that produce this group's channels."""
        return self.members_with_role(FILTER)

    @property
    def params(self):
        """Names of the parameters in the group, sorted, each once."""
        return sorted({m.var for m in self.members if self.roles[m] in _PARAM_ROLES})

    @property
    def filter_params(self):
        """Names of the conv weights producing the channels, sorted."""
        return sorted({m.var for m in self.filters})

    @property
    def key(self):
        """The member that identifies this group in any program built from the same
        model: its first producing conv weight segment (name, axis, start)."""
        candidates = self.filters or self.members_with_role(DEPTHWISE_FILTER) or \
            [m for m in self.members if self.roles[m] in _PARAM_ROLES] or self.members
        first = min(candidates, key=lambda m: (m.var, m.axis, m.start))
        return (first.var, first.axis, first.start)

    @property
    def blocked_reason(self):
        """Why the group cannot be pruned, or None."""
        if self.unknown:
            return self.unknown[0]
        if self.fixed:
            return self.fixed[0]
        if not self.filters:
            return "no conv produces these channels"
        if self.size < 2:
            return "a single channel (at least one must stay)"
        return None

    @property
    def prunable(self):
        return self.blocked_reason is None


_PARAM_ROLES = (FILTER, DEPTHWISE_FILTER, INPUT_FILTER, INPUT_WEIGHT, BN_SCALE, BN_OFFSET, BN_MEAN,
                BN_VARIANCE, PARAM)


class ChannelGraph:
    """The channel groups of one program, and lookups from parameters to groups."""

    def __init__(self, index, groups, fixed_vars=frozenset(), extra_ops=None):
        self.index = index
        self.program = index.program
        self.groups = groups
        self.fixed_vars = frozenset(fixed_vars)  # what the analysis was asked to keep
        self.extra_ops = dict(extra_ops or {})   # the op specs it added for itself
        self._group_of_segment = {}
        for group in groups:
            for member in group.members:
                self._group_of_segment[(member.var, member.axis, member.start)] = group
        self._segments_of_slot = collections.defaultdict(list)
        for group in groups:
            for member in group.members:
                self._segments_of_slot[(member.var, member.axis)].append(member)
        for segments in self._segments_of_slot.values():
            segments.sort(key=lambda m: m.start)

    def group_at(self, var, axis, start):
        """The group holding the segment of `var` axis `axis` that starts at `start`."""
        return self._group_of_segment.get((var, axis, start))

    def segments(self, var, axis):
        """The segments of (var, axis) in channel order (empty when not analysed)."""
        return self._segments_of_slot.get((var, axis), [])

    def groups_of(self, var, axis=0):
        """The distinct groups covering axis `axis` of `var`, in channel order."""
        seen, result = set(), []
        for segment in self.segments(var, axis):
            group = self._group_of_segment[(segment.var, segment.axis, segment.start)]
            if group.id not in seen:
                seen.add(group.id)
                result.append(group)
        return result

    @property
    def convs(self):
        return self.index.convs

    def conv_of_weight(self, weight):
        """The forward conv whose Filter is `weight`, or None."""
        return self.index.conv_by_weight.get(weight)

    def output_groups(self, weight):
        """The groups of the channels a conv weight produces (depthwise: carries)."""
        conv = self.conv_of_weight(weight)
        axis = conv.output_axis if conv else 0
        return self.groups_of(weight, axis)


def check_graph_options(graph, fixed_vars=(), extra_ops=None):
    """A PruneError when `graph` was not analysed with `fixed_vars` (all of them fixed there)
    and `extra_ops` (the same specs): a given graph is used as it is, and silently planning
    on one without them would prune a var the caller wants kept."""
    missing = sorted(set(fixed_vars) - graph.fixed_vars)
    if missing:
        raise PruneError(f"fixed_vars {missing[:4]} are not fixed in the given graph: build it "
                         "with analyze_program(program, fixed_vars=...) or pass no graph")
    if dict(extra_ops or {}) != graph.extra_ops:
        raise PruneError(f"extra_ops {sorted(extra_ops or {})} differ from the given graph's "
                         f"{sorted(graph.extra_ops)}: build it with analyze_program(program, "
                         "extra_ops=...) or pass no graph")


def conv_reaches(index):
    """{conv weight: [what its output channels reach]} over the forward ops of `index`.

    The walk passes through ops whose spec kind is CHANNEL_PRESERVING (batch norm,
    activations, bias adds, upsampling ...) when they read the channels as their data
    input (X / Input); anything else ends it and is listed: a conv as `conv:<weight>`,
    any other op by its type (`concat`, `yolov3_loss`, `yolo_box` ...).
    """
    return {conv.weight: _walk_reaches(index, conv.output) for conv in index.convs}


_DATA_INPUT_SLOTS = ("X", "Input")
_DATA_OUTPUT_SLOTS = ("Out", "Y", "Output")


def _walk_reaches(index, start_var):
    found, seen, pending = [], set(), [start_var]
    while pending:
        var = pending.pop()
        if var in seen:
            continue
        seen.add(var)
        for op in index.forward_readers(var):
            kind = index.kind_of(op)
            if kind == CHANNEL_PRESERVING and any(var in op.vars(s) for s in _DATA_INPUT_SLOTS):
                pending.extend(name for slot in _DATA_OUTPUT_SLOTS for name in op.vars(slot)
                               if op.index in index.producers.get(name, ()))  # not an input Y
                continue
            label = f"conv:{op.var('Filter')}" if kind in (CONV, CONV_TRANSPOSE) else op.type
            if label not in found:
                found.append(label)
    return found


def analyze_program(program, fixed_vars=(), extra_ops=None):
    """Build the ChannelGraph of `program`'s global block.

    `fixed_vars` names vars whose channels must keep their layout (e.g. outputs a
    caller fetches); program inputs are always fixed. `extra_ops` ({op type: OpSpec})
    adds or overrides op specs for this analysis only (the global table is unchanged).
    """
    index = ProgramIndex(program, op_table(extra_ops))
    fixed_vars = set(fixed_vars)
    links, blocks, units = _propagate(index, fixed_vars)
    return ChannelGraph(index, _build_groups(index, links, blocks, units), fixed_vars, extra_ops)


def _seed_slots(index):
    for conv in index.convs:
        yield conv.weight, conv.output_axis
        if conv.kind != "depthwise":
            yield conv.weight, conv.input_axis


def _propagate(index, fixed_vars):
    """Breadth-first over (var, axis) slots from the conv weights; collect links and blocks.

    Blocks are (Segment, kind, reason) with kind 'fixed' or 'unknown'. Also returns
    {(var, axis): elements per channel} of the slots whose channels are blocks of
    elements (a flattened [C, H, W] axis and what it reaches: block H * W).
    """
    links, blocks, units = [], [], {}
    seen_slots, seen_visits, seen_links = set(), set(), set()
    rules = {}  # op type -> its rule (None: no rule), looked up once per type
    queue = collections.deque()

    def push(var, axis):
        if (var, axis) not in seen_slots:
            seen_slots.add((var, axis))
            queue.append((var, axis))

    for var, axis in _seed_slots(index):
        push(var, axis)
    while queue:
        var, axis = queue.popleft()
        shape = index.shapes.get(var)
        if shape is None or axis >= len(shape) or shape[axis] is None or shape[axis] <= 0:
            reason = f"'{var}' has no static size on axis {axis} (shape {shape})"
            blocks.append((Segment(var, axis, 0, 0), "unknown", reason))
            continue
        unit = units.get((var, axis), 1)
        whole = Segment(var, axis, 0, shape[axis] // unit, unit)
        if var in fixed_vars:
            blocks.append((whole, "fixed", f"'{var}' is marked fixed"))
        if index.is_program_input(var):
            blocks.append((whole, "fixed", f"'{var}' is a program input"))
        for op_index in index.touching.get(var, ()):
            if (op_index, var, axis) in seen_visits:
                continue
            seen_visits.add((op_index, var, axis))
            op = index.ops[op_index]
            if op.type not in rules:
                spec = spec_for(op.type, index.table)
                rules[op.type] = spec.rule if spec is not None else None
            rule = rules[op.type]
            if rule is None:
                blocks.append((whole, "unknown",
                               f"op '{op.type}' (#{op_index}) reading or writing '{var}' has no "
                               "channel rule"))
                continue
            try:
                results = [_in_units(result, units) if isinstance(result, Link) else result
                           for result in rule(op, var, axis)]
            except Unsupported as error:
                blocks.append((whole, "unknown", str(error)))
                continue
            unsized = [s for r in results if isinstance(r, Link) for s in r if s.length <= 0]
            if unsized:
                blocks.append((whole, "unknown", f"{op.describe()}: '{unsized[0].var}' has no "
                               f"static size on axis {unsized[0].axis}"))
                continue
            for result in results:
                if isinstance(result, Link):
                    key = (result.a, result.b) if result.a <= result.b else (result.b, result.a)
                    if key in seen_links:
                        continue
                    seen_links.add(key)
                    _check_link(index, op, result)
                    links.append(result)
                    units.update(((s.var, s.axis), s.block) for s in result)
                    push(result.a.var, result.a.axis)
                    push(result.b.var, result.b.axis)
                elif isinstance(result, Fixed):
                    blocks.append((result.segment, "fixed", result.reason))
                    push(result.segment.var, result.segment.axis)
    return links, blocks, units


def _in_units(link, units):
    """`link` with both sides counted in their slots' channel units.

    A rule links element ranges (block 1) unless it merges dims itself (a flatten: block
    H * W on one side). When one side's slot already counts blocks of `u` elements, an
    element-for-element link moves whole blocks: both sides become block `u`. A slot met
    with two different blocks cannot be pruned consistently.
    """
    a_unit, b_unit = (units.get((s.var, s.axis), s.block) for s in link)
    if link.a.block == link.b.block == 1 and max(a_unit, b_unit) > 1:
        if a_unit > 1 and b_unit > 1 and a_unit != b_unit:
            raise Unsupported(f"'{link.a.var}' and '{link.b.var}' group their channels in blocks of "
                              f"{a_unit} and {b_unit} elements")
        unit = max(a_unit, b_unit)
        if any(s.start % unit or s.length % unit for s in link):
            raise Unsupported(f"'{link.a.var}' axis {link.a.axis} range {link.a.start}+"
                              f"{link.a.length} is not whole blocks of {unit} elements")
        link = Link(*(Segment(s.var, s.axis, s.start // unit, s.length // unit, unit)
                      for s in link))
    for segment in link:
        known = units.get((segment.var, segment.axis), segment.block)
        if known != segment.block:
            raise Unsupported(f"axis {segment.axis} of '{segment.var}' is reached both in blocks "
                              f"of {known} and of {segment.block} elements")
    return link


def _slot_size(index, var, axis, units):
    """Channels of `var` along `axis` in that slot's units."""
    return index.shapes[var][axis] // units.get((var, axis), 1)


def _check_link(index, op, link):
    for segment in link:
        size = index.shapes[segment.var][segment.axis] // segment.block
        if segment.start < 0 or segment.start + segment.length > size or segment.length <= 0:
            raise AssertionError(f"rule of {op.describe()} produced {segment} outside "
                                 f"'{segment.var}' shape {index.shapes[segment.var]}")
    if link.a.length != link.b.length:
        raise AssertionError(f"rule of {op.describe()} linked unequal ranges {link}")


def _refine_boundaries(index, links, units):
    """Cut points per slot such that every link maps whole pieces onto whole pieces."""
    bounds = collections.defaultdict(set)
    by_slot = collections.defaultdict(list)
    for position, (a, b) in enumerate(links):
        for segment in (a, b):
            slot = (segment.var, segment.axis)
            bounds[slot].update((0, _slot_size(index, segment.var, segment.axis, units),
                                 segment.start, segment.start + segment.length))
            by_slot[slot].append(position)
    pending = collections.deque(bounds)
    queued = set(pending)
    while pending:
        slot = pending.popleft()
        queued.discard(slot)
        for position in by_slot[slot]:
            a, b = links[position]
            for source, target in ((a, b), (b, a)):
                if (source.var, source.axis) != slot:
                    continue
                target_slot = (target.var, target.axis)
                target_bounds = bounds[target_slot]
                end = source.start + source.length
                added = False
                for cut in list(bounds[slot]):
                    if source.start < cut < end:
                        mapped = target.start + cut - source.start
                        if mapped not in target_bounds:
                            target_bounds.add(mapped)
                            added = True
                if added and target_slot not in queued:
                    queued.add(target_slot)
                    pending.append(target_slot)
    return {slot: sorted(cuts) for slot, cuts in bounds.items()}


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, item):
        parent = self.parent.setdefault(item, item)
        if parent != item:
            root = self.find(parent)
            self.parent[item] = root
            return root
        return item

    def union(self, a, b):
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a


def _build_groups(index, links, blocks, units):
    cuts = _refine_boundaries(index, links, units)
    union = _UnionFind()
    for slot, slot_cuts in cuts.items():
        for start in slot_cuts[:-1]:
            union.find((slot, start))
    for a, b in links:
        a_slot, b_slot = (a.var, a.axis), (b.var, b.axis)
        for cut in cuts[a_slot]:
            if a.start <= cut < a.start + a.length:
                union.union((a_slot, cut), (b_slot, b.start + cut - a.start))
    members_of_root = collections.defaultdict(list)
    for slot, slot_cuts in cuts.items():
        for start, end in zip(slot_cuts[:-1], slot_cuts[1:]):
            members_of_root[union.find((slot, start))].append(
                Segment(slot[0], slot[1], start, end - start, units.get(slot, 1)))
    group_of_root, groups = {}, []
    for root, members in members_of_root.items():
        members.sort(key=lambda m: (m.var, m.axis, m.start))
        sizes = {m.length for m in members}
        if len(sizes) != 1:
            raise AssertionError(f"channel group with unequal member sizes: {members}")
        group = ChannelGroup(len(groups), sizes.pop(), members,
                             {m: _role(index, m) for m in members})
        group_of_root[root] = group
        groups.append(group)
    for segment, kind, reason in blocks:
        slot = (segment.var, segment.axis)
        end = segment.start + segment.length
        touched = [start for start in cuts.get(slot, [])[:-1]
                   if segment.length == 0 or segment.start <= start < end]
        for start in touched:
            group = group_of_root[union.find((slot, start))]
            reasons = group.fixed if kind == "fixed" else group.unknown
            if reason not in reasons:
                reasons.append(reason)
    groups.sort(key=lambda g: g.key)
    for number, group in enumerate(groups):
        group.id = number
    return groups


def _role(index, member):
    var, axis = member.var, member.axis
    if var in index.parameters:
        conv = index.conv_by_weight.get(var)
        if conv is not None:
            if conv.kind == "depthwise":
                return DEPTHWISE_FILTER
            return FILTER if axis == conv.output_axis else INPUT_FILTER
        if var in index.batch_norms:
            return index.batch_norms[var]
        if any(index.ops[i].type in MATMUL_TYPES for i in index.readers.get(var, ())):
            return INPUT_WEIGHT  # the matmul rule links a weight on its contracted axis only
        return PARAM
    if var in index.persistable:
        if var in index.batch_norms:  # moving statistics that are not Parameters
            return index.batch_norms[var]
        return ACCUMULATOR
    return ACTIVATION
