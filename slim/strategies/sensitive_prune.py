"""SensitivePruneStrategy: per-group ratios from measured sensitivities, chosen so that
`target_ratio` of the FLOPs goes with the least predicted metric loss.

When it is validated (before the first iteration, on the model the run starts from: the
config's trained `weights`, or the checkpoint it resumes) it takes the sensitivities
from `sensitivities_file` and measures the missing ones through `context.evaluate`
(each selected group pruned alone at delta_rate, 2 * delta_rate, ... by masking, on the
first `eval_rate` of the eval set; see `slim.prune.sensitivity`), writing the file as
they come. Then it searches, once, the per-group ratios of every step
(`search_ratios_by_loss`): step k (0-based, fired at epoch start_epoch + k) prunes the
model so that (k + 1) / num_steps of `target_ratio` of the unpruned FLOPs is gone; a
group's ratio never shrinks from one step to the next. Which channels go is decided by
the pruner's criterion at fire time. The schedule is part of its state, so a resumed run
neither measures nor prunes again. `python -m slim sensitivity` measures the file ahead,
in worker processes if wanted; without `context.evaluate` (inspect -s, ranks other than
0) the file must be complete.

The sensitivities file (JSON, whatever its suffix) holds the identity of the model it
was measured on (parameter names and shapes, eval_rate, criterion), the baseline metric
and the metric per group and ratio; a file of another model is refused, and so is one
whose baseline differs from this model's (other weights or eval set).
"""
import json
import math
import os

from tqdm import tqdm

from slim.errors import ConfigError, UserError, shorten
from slim.io.output_places import check_output_file, lock_file
from slim.prune import PruneError, format_summary, plan_summary
from slim.prune.graph import analyze_program
from slim.prune.pruner import keep_count
from slim.prune.sensitivity import (
    evaluate_masked,
    plan_keeps,
    ratio_key,
    removed_flops_fraction,
    search_ratios_by_loss,
    selected_groups,
    sensitivity_ratios,
)
from slim.strategies.base import Strategy, register_strategy
from slim.strategies.uniform_prune import latency_target_of, pruner_criterion

SENSITIVITIES_FORMAT = "slim-sensitivities"
SENSITIVITIES_VERSION = 1
BASELINE_TOLERANCE = 1e-6  # the same model on the same eval batches scores the same


class SensitivityFileError(UserError):
    """A sensitivities file that is unreadable, malformed, or made for another model."""


def model_identity(program, eval_rate, criterion):
    """What a sensitivities file must have been measured on: the parameters (names and
    shapes) of `program`, the eval fraction and the criterion choosing the channels."""
    params = {param.name: [int(d) for d in param.shape]
              for param in program.global_block().all_parameters()}
    return {"params": dict(sorted(params.items())), "eval_rate": float(eval_rate),
            "criterion": criterion}


def _identity_difference(stored, identity):
    """A phrase naming how `stored` differs from `identity`, or None."""
    for key in ("eval_rate", "criterion"):
        if stored.get(key) != identity[key]:
            return f"{key} {shorten(stored.get(key), 40)}, not {identity[key]}"
    params = stored.get("params") if isinstance(stored.get("params"), dict) else {}
    for name, shape in identity["params"].items():
        if params.get(name) != shape:
            return (f"parameter {name} {'absent' if name not in params else params[name]}, "
                    f"not {shape}")
    extra = sorted(set(params) - set(identity["params"]))
    return f"parameter {extra[0]} not in this model" if extra else None


class SensitivityFile:
    """The sensitivities of one model: baseline metric and the metric per (group, ratio).

    `open(path, identity)` reads the file (refusing one of another model) or starts empty;
    `record` writes the whole file atomically after every entry (through the output place
    checked by `check_writable`), so an interrupted measurement keeps what it measured.
    """

    def __init__(self, path, identity, baseline=None, groups=None):
        self.path, self.identity = path, identity
        self.baseline = baseline
        self.groups = groups if groups is not None else {}
        self.written = None

    @classmethod
    def open(cls, path, identity):
        """The file at `path` for the model of `identity`; empty when it does not exist."""
        if not os.path.exists(path):
            return cls(path, identity)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise SensitivityFileError(f"sensitivities file '{shorten(path)}' cannot be read as "
                                       f"JSON ({shorten(error, 80)}); remove it or name another "
                                       "sensitivities_file") from None
        if not isinstance(data, dict) or data.get("format") != SENSITIVITIES_FORMAT or \
                data.get("version") != SENSITIVITIES_VERSION or \
                not isinstance(data.get("groups"), dict) or \
                not isinstance(data.get("identity"), dict):
            raise SensitivityFileError(f"sensitivities file '{shorten(path)}' is not a "
                                       f"{SENSITIVITIES_FORMAT} file of version "
                                       f"{SENSITIVITIES_VERSION}; remove it or name another")
        difference = _identity_difference(data["identity"], identity)
        if difference:
            raise SensitivityFileError(f"sensitivities file '{shorten(path)}' was measured on "
                                       f"another model or eval set ({difference}); remove it or "
                                       "name another sensitivities_file")
        groups = _checked_groups(path, data["groups"])
        baseline = data.get("baseline")
        if baseline is not None or groups:  # a file with measurements has their baseline
            baseline = _checked_metric(path, "baseline", baseline)
        return cls(path, identity, baseline, groups)

    def check_baseline(self, baseline):
        """Take `baseline` (the unpruned metric now) or refuse a file measured at another."""
        if self.baseline is not None and abs(self.baseline - baseline) > BASELINE_TOLERANCE:
            raise SensitivityFileError(
                f"sensitivities file '{shorten(self.path)}' was measured on a model scoring "
                f"{self.baseline:.6f}, this one scores {baseline:.6f} (other weights or eval set); "
                "remove it or name another sensitivities_file")
        self.baseline = float(baseline)

    def missing(self, names, ratios):
        """[(group name, ratio)] not measured yet, group-major."""
        return [(name, ratio) for name in names for ratio in ratios
                if ratio_key(ratio) not in self.groups.get(name, {}).get("metric", {})]

    def check_writable(self):
        """The output-place check before measuring (see `check_output_file`)."""
        if self.written is None:
            self.written = check_output_file(self.path, "sensitivities_file")

    def record(self, name, group, ratio, metric):
        """Store the metric of group `name` (a ChannelGroup) pruned by `ratio`; write the file."""
        entry = self.groups.setdefault(name, {"params": list(group.params),
                                              "channels": int(group.size), "metric": {}})
        entry["metric"][ratio_key(ratio)] = float(metric)
        self.save()

    def save(self):
        self.check_writable()
        written, file_name = self.written
        written.write_bytes(file_name, json.dumps(self.to_dict(), indent=1).encode("utf-8"))

    def losses(self, name):
        """{ratio: (loss, relative loss or None)} of a group: baseline minus metric."""
        metrics = self.groups.get(name, {}).get("metric", {})
        return {float(key): (self.baseline - value,
                             (self.baseline - value) / self.baseline if self.baseline else None)
                for key, value in metrics.items()}

    def curves(self, names, ratios):
        """{group: {ratio: loss}} over `ratios` (all measured, see `missing`)."""
        curves = {}
        for name in names:
            losses = self.losses(name)
            curves[name] = {ratio: losses[float(ratio_key(ratio))][0] for ratio in ratios}
        return curves

    def to_dict(self):
        """The file's JSON: identity, baseline and per group its metric and losses per ratio."""
        groups = {}
        for name, entry in self.groups.items():
            losses = self.losses(name) if self.baseline is not None else {}
            groups[name] = dict(entry,
                                loss={key: losses[float(key)][0] for key in entry["metric"] if losses},
                                relative_loss={key: losses[float(key)][1]
                                               for key in entry["metric"] if losses})
        return {"format": SENSITIVITIES_FORMAT, "version": SENSITIVITIES_VERSION,
                "identity": self.identity, "baseline": self.baseline, "groups": groups}


def lock_sensitivities_file(path):
    """Claim the sensitivities file at `path` before anything is measured into it
    (`slim.io.output_places.lock_file`; its directory is checked and made first when the
    file does not exist yet): a second run on the same file fails at once, in one line,
    instead of measuring everything and then finding the file changed under it."""
    if not os.path.exists(path):
        check_output_file(path, "sensitivities_file")
    return lock_file(path, "sensitivities_file")


def _checked_groups(path, groups):
    """The groups of a loaded file as {name: {params, channels, metric}}, every value
    checked for type, range and finiteness (a NaN metric would rank groups by nothing);
    the first bad one is a one-line SensitivityFileError naming the file and the key."""
    checked = {}
    for name, entry in groups.items():
        where = f"groups.{shorten(name, 60)}"
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if not isinstance(metric, dict):
            raise _bad_value(path, f"{where}.metric", metric,
                             "a mapping of ratios in (0, 1) to metrics in [0, 1]")
        params = entry.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise _bad_value(path, f"{where}.params", params, "a list of parameter names")
        channels = entry.get("channels")
        if channels is not None and not (_is_number(channels) and isinstance(channels, int)
                                          and channels > 0):
            raise _bad_value(path, f"{where}.channels", channels, "a positive integer")
        values = {}
        for key, value in metric.items():
            try:
                ratio = float(key)
            except ValueError:
                ratio = None
            if ratio is None or not 0 < ratio < 1:
                raise _bad_value(path, f"{where}.metric", key,
                                 "keys that are ratios in (0, 1), e.g. '0.5'", what="key")
            values[ratio_key(ratio)] = _checked_metric(path, f"{where}.metric.{key}", value)
        checked[name] = {"params": params, "channels": channels, "metric": values}
    return checked


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_metric(path, key, value):
    """`value` as a float when it is a finite number in [0, 1] (a detection metric); else a
    one-line SensitivityFileError naming the file and the key."""
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value <= 1:
        raise _bad_value(path, key, value, "a finite number in [0, 1] (a mAP)")
    return float(value)


def _bad_value(path, key, value, valid, what="value"):
    return SensitivityFileError(f"sensitivities file '{shorten(path)}': {key} must be {valid}, "
                                f"got {what} {shorten(json.dumps(value), 60)}; remove the file "
                                "(it is measured again) or name another sensitivities_file")


def measure(entries, program, graph, scope, pruned_params, criterion, evaluate, record,
            place=None, progress=None):
    """Measure the metric of every (group name, ratio) of `entries` with that group alone
    pruned by that ratio (masked, see `slim.prune.sensitivity.evaluate_masked`);
    `record(name, group, ratio, metric)` gets each as it comes; `progress()` after each."""
    groups = dict(selected_groups(program, pruned_params, graph))
    for name, ratio in entries:
        group = groups[name]
        plan = plan_keeps(program, scope, pruned_params, {name: keep_count(group.size, ratio)},
                          criterion, graph)
        record(name, group, ratio, evaluate_masked(plan, graph, scope, evaluate, place))
        if progress is not None:
            progress()


@register_strategy
class SensitivePruneStrategy(Strategy):
    """Prune `pruned_params` group by group, each by the ratio its measured sensitivity
    allows, to remove `target_ratio` of the FLOPs in `num_steps` steps from `start_epoch`."""

    def __init__(self, name, options, slim_config):
        super().__init__(name, options, slim_config)
        self.criterion = pruner_criterion(name, options.pruner, slim_config.pruners[options.pruner])
        self.pruned_params = options.pruned_params
        self.target_ratio = float(options.target_ratio)
        self.delta_rate = float(options.delta_rate)
        self.num_steps = int(options.num_steps)
        self.eval_rate = float(options.eval_rate) if options.eval_rate is not None else 1.0
        self.sensitivities_file = options.sensitivities_file
        self.source = slim_config.path
        self.latency = latency_target_of(options)  # replaces target_ratio when given
        self.schedule = None  # per step: {target_ratio, threshold, removed, ratios, keeps}
        self.steps_done = 0

    def validate(self, context):
        """Load or measure the sensitivities and search the ratios of every step (the scope
        is restored after each masked evaluation; nothing changes). A resumed run has its
        schedule already."""
        if self.schedule is None:
            self.schedule = self._make_schedule(context)

    def on_epoch_begin(self, context):
        """Fire step k at the first epoch >= start_epoch + k; return its plan record."""
        if self.steps_done >= self.num_steps or context.epoch < self.start_epoch + self.steps_done:
            return None
        if self.schedule is None:
            self.schedule = self._make_schedule(context)
        step = self.schedule[self.steps_done]
        programs = context.programs
        plan = self._step_plan(programs.eval.program, context.scope, step)
        summary = plan_summary(plan, programs.eval.program)
        programs.apply(plan, context.scope)
        self.steps_done += 1
        ratios = ", ".join(f"{name} {ratio:.2f}" for name, ratio in step["ratios"].items())
        if step.get("latency"):
            predicted = step["latency"]
            context.log(f"strategy '{self.name}' at epoch {context.epoch}: step {self.steps_done}/"
                        f"{self.num_steps} pruned {len(plan.groups)} groups to the latency "
                        f"target: predicted {predicted['predicted_before_ms']:.2f} -> "
                        f"{predicted['predicted_after_ms']:.2f} ms on {predicted['runtime']} "
                        f"({self.criterion}; ratios {shorten(ratios, 300)})")
            context.log(format_summary(summary))
            return {"strategy": self.name, "epoch": context.epoch, "plan": plan.to_dict(),
                    "latency": predicted}
        context.log(f"strategy '{self.name}' at epoch {context.epoch}: step {self.steps_done}/"
                    f"{self.num_steps} pruned {len(plan.groups)} groups by their sensitivities "
                    f"(loss threshold {step['threshold']:.5f}; ratios {shorten(ratios, 300)}) to "
                    f"remove {100 * step['target_ratio']:.1f}% of the unpruned FLOPs "
                    f"({self.criterion})")
        context.log(format_summary(summary))
        return {"strategy": self.name, "epoch": context.epoch, "plan": plan.to_dict()}

    def state_dict(self):
        """Steps fired and the schedule (a resumed run neither measures nor prunes again)."""
        return {"steps_done": self.steps_done, "schedule": self.schedule,
                "options": self.options()}

    def load_state_dict(self, state):
        self.steps_done = int(state.get("steps_done", 0))
        self.schedule = state.get("schedule")

    def options(self):
        """The options that decide the schedule, as JSON values."""
        options = {"pruned_params": self.pruned_params, "target_ratio": self.target_ratio,
                   "delta_rate": self.delta_rate, "num_steps": self.num_steps,
                   "eval_rate": self.eval_rate, "criterion": self.criterion}
        if self.latency is not None:  # (absent otherwise: older checkpoints compare equal)
            import dataclasses
            options["latency"] = dataclasses.asdict(self.latency)
        return json.loads(json.dumps(options))

    def _error(self, error):
        return ConfigError(f"{self.source}: strategy '{self.name}': {error}")

    def _make_schedule(self, context):
        """Per step the cumulative FLOPs target and the per-group ratios and kept channels
        meeting it, searched on the sensitivity curves of the model as it is now."""
        program = context.programs.eval.program
        try:
            groups = selected_groups(program, self.pruned_params)
            curves = self._curves(context, program, groups, sensitivity_ratios(self.delta_rate))
            removed = removed_flops_fraction(program, groups)
            if self.latency is not None:
                return self._latency_schedule(context, program, groups, curves, removed)
            schedule, previous = [], {}
            for step in range(self.num_steps):
                target = self.target_ratio * (step + 1) / self.num_steps
                ratios, threshold, fraction = search_ratios_by_loss(curves, removed, target)
                ratios = {name: max(ratio, previous.get(name, 0.0)) for name, ratio in ratios.items()}
                schedule.append({"target_ratio": target, "threshold": threshold,
                                 "removed": removed(ratios), "ratios": ratios,
                                 "keeps": {name: keep_count(group.size, ratios[name])
                                           for name, group in groups}})
                previous = ratios
        except (PruneError, SensitivityFileError) as error:
            raise self._error(error) from None
        return schedule

    def _latency_schedule(self, context, program, groups, curves, removed):
        """Per step the kept channels meeting the step's latency target (step k: 1 - (1 -
        ratio) * (k + 1) / num_steps of the predicted ms, or the ms target at the last step)
        with the least metric lost by the sensitivity curves."""
        import dataclasses

        from slim.prune.latency import LatencyTableError, plan_for_latency
        schedule, previous = [], {}
        sizes = {name: group.size for name, group in groups}
        for step in range(self.num_steps):
            fraction = (step + 1) / self.num_steps
            target = self.latency
            if target.ratio is not None:
                target = dataclasses.replace(target, ratio=1 - (1 - target.ratio) * fraction)
            elif step + 1 < self.num_steps:
                continue
            try:
                plan, predicted = plan_for_latency(program, context.scope, self.pruned_params,
                                                   target, flops_program=program,
                                                   criterion=self.criterion, sensitivities=curves)
            except LatencyTableError as error:
                raise self._error(error) from None
            keeps = {name: min(kept, previous.get(name, kept))
                     for name, (kept, _) in predicted["keeps"].items()}
            ratios = {name: 1 - keeps[name] / sizes[name] for name in keeps}
            schedule.append({"target_ratio": None, "target_latency": target.ratio or target.ms,
                             "threshold": None, "removed": removed(ratios), "ratios": ratios,
                             "keeps": keeps, "latency": predicted})
            previous = keeps
        return schedule

    def _curves(self, context, program, groups, ratios):
        """{group: {ratio: loss}} from the file, the missing entries measured (and written)."""
        if context.evaluate is None:  # nothing can be measured here: the file is only read
            return self._curves_locked(context, program, groups, ratios)
        with lock_sensitivities_file(self.sensitivities_file):
            return self._curves_locked(context, program, groups, ratios)

    def _curves_locked(self, context, program, groups, ratios):
        store = SensitivityFile.open(self.sensitivities_file,
                                     model_identity(program, self.eval_rate, self.criterion))
        names = [name for name, _ in groups]
        evaluate = None
        if context.evaluate is not None:
            def evaluate():
                return context.evaluate(fraction=self.eval_rate)
        missing = store.missing(names, ratios)
        if missing and (evaluate is None or context.world_size > 1):
            state = (f"lacks {len(missing)} of {len(names) * len(ratios)} (group, ratio) entries"
                     if os.path.exists(self.sensitivities_file) else "does not exist")
            # On several cards rank 0 alone has an eval set, and the other ranks would wait
            # for its measurement until their communicator times out: every rank stops here.
            where = (f"a run on {context.world_size} cards does not measure them (rank 0 alone "
                     "has an eval set)" if context.world_size > 1
                     else "there is no eval set here to measure them")
            raise SensitivityFileError(
                f"sensitivities_file '{shorten(self.sensitivities_file)}' {state} and {where}: "
                f"run `python -m slim sensitivity -c CONFIG -s {shorten(self.source)}` first")
        if evaluate is not None:
            store.check_baseline(evaluate())
        if missing:
            store.check_writable()
            context.log(f"strategy '{self.name}': measuring {len(missing)} sensitivities "
                        f"({len(names)} groups x {len(ratios)} ratios, eval_rate {self.eval_rate}) "
                        f"into '{self.sensitivities_file}'")
            with tqdm(total=len(missing), desc=f"sensitivity {self.name}", unit="eval") as bar:
                measure(missing, program, analyze_program(program), context.scope,
                        self.pruned_params, self.criterion, evaluate, store.record,
                        place=getattr(context.executor, "place", None),
                        progress=lambda: bar.update(1))
        return store.curves(names, ratios)

    def _step_plan(self, program, scope, step):
        """The plan of one step on the model as it is now: every group cut to the channels
        the step keeps (groups already there are left out)."""
        try:
            sizes = {name: group.size for name, group in selected_groups(program, self.pruned_params)}
            keeps = {name: keep for name, keep in step["keeps"].items()
                     if name in sizes and keep < sizes[name]}
            return plan_keeps(program, scope, self.pruned_params, keeps, self.criterion,
                              target_ratio=step["target_ratio"])
        except PruneError as error:
            raise self._error(error) from None
