"""UniformPruneStrategy: at start_epoch, prune every matched conv by one ratio chosen so that
`target_ratio` of the FLOPs goes, then training continues on the pruned program."""
import dataclasses
import json

from slim.errors import ConfigError, shorten
from slim.strategies.base import Strategy, register_strategy


def pruner_criterion(strategy_name, pruner_name, pruner):
    """The one criterion of a StructurePruner's `criterions` ({pattern: criterion})."""
    criteria = sorted(set(pruner.criterions.values()))
    if len(criteria) != 1:
        raise ConfigError(f"pruner '{pruner_name}' (used by strategy '{strategy_name}'): "
                          f"criterions name {', '.join(criteria) or 'nothing'}; one criterion for "
                          "all parameters is supported, e.g. {'*': l1_norm}")
    return criteria[0]


def latency_target_of(options):
    """The slim.prune.latency.LatencyTarget of a strategy entry's options, or None."""
    from slim.prune.latency import LatencyTarget
    ratio = getattr(options, "target_latency_ratio", None)
    ms = getattr(options, "target_latency_ms", None)
    if ratio is None and ms is None:
        return None
    return LatencyTarget(options.latency_table, options.runtime, options.latency_threads,
                         ratio, ms)


@register_strategy
class UniformPruneStrategy(Strategy):
    """Prune `pruned_params` uniformly to remove `target_ratio` of the FLOPs at `start_epoch`."""

    def __init__(self, name, options, slim_config):
        super().__init__(name, options, slim_config)
        self.criterion = pruner_criterion(name, options.pruner, slim_config.pruners[options.pruner])
        self.target_ratio = float(options.target_ratio)
        self.pruned_params = options.pruned_params
        self.source = slim_config.path
        self.latency = latency_target_of(options)  # replaces target_ratio when given
        self.fired = False
        self.fired_with = None  # the options it pruned with, from a resumed checkpoint

    def validate(self, context):
        """Plan the pruning on the model as it is now (a dry run: the plan is computed, not
        applied), so a `pruned_params` that matches nothing prunable, a bad regex or a
        `target_ratio` that cannot be met is a one-line error before the first iteration."""
        if self.fired:
            self._warn_if_options_changed(context.log)
            return
        from slim.prune import PruneError
        from slim.prune.latency import LatencyTableError
        try:
            self._plan(context)
        except LatencyTableError as error:
            raise ConfigError(f"{self.source}: strategy '{self.name}': {error}") from None
        except PruneError as error:
            raise ConfigError(f"{self.source}: strategy '{self.name}': {error} (checked before "
                              "training; nothing was trained)") from None

    def on_epoch_begin(self, context):
        """Prune once, at the first epoch >= start_epoch; return the plan record."""
        if self.fired or context.epoch < self.start_epoch:
            return None
        from slim.prune import format_summary, plan_summary
        programs = context.programs
        plan, predicted = self._plan(context)
        summary = plan_summary(plan, programs.eval.program)  # before applying: FLOPs before/after
        programs.apply(plan, context.scope)
        if predicted is None:
            context.log(f"strategy '{self.name}' at epoch {context.epoch}: pruned "
                        f"{len(plan.matched)} params by ratio {plan.ratio:.4f} ({self.criterion}) "
                        f"to remove {100 * self.target_ratio:.1f}% of the FLOPs")
        else:
            context.log(f"strategy '{self.name}' at epoch {context.epoch}: pruned "
                        f"{len(plan.matched)} params ({self.criterion}) to "
                        f"{self.latency.describe()}: predicted {predicted['predicted_before_ms']:.2f}"
                        f" -> {predicted['predicted_after_ms']:.2f} ms "
                        f"({predicted['predicted_speedup']:.2f}x)")
        context.log(format_summary(summary))
        self.fired = True
        record = {"strategy": self.name, "epoch": context.epoch, "plan": plan.to_dict()}
        if predicted is not None:
            record["latency"] = predicted
        return record

    def _plan(self, context):
        """(plan, predicted latency summary or None) of the model as it is now."""
        programs = context.programs
        if self.latency is None:
            return programs.plan(self.pruned_params, self.target_ratio, self.criterion,
                                 context.scope), None
        return programs.plan_latency(self.pruned_params, self.latency, self.criterion,
                                     context.scope)

    def state_dict(self):
        """Whether it has pruned (a resumed run holds the plan, replayed: no second prune),
        and with which options."""
        return {"fired": self.fired, "options": self.options() if self.fired else None}

    def load_state_dict(self, state):
        self.fired = bool(state.get("fired", False))
        self.fired_with = state.get("options")

    def options(self):
        """The options that decide the plan, as JSON values."""
        options = {"pruned_params": self.pruned_params, "target_ratio": self.target_ratio,
                   "criterion": self.criterion}
        if self.latency is not None:  # (absent otherwise: older checkpoints compare equal)
            options["latency"] = dataclasses.asdict(self.latency)
        return json.loads(json.dumps(options))

    def _warn_if_options_changed(self, log):
        """A resumed run keeps the plan it made; say so when the slim config now asks for
        another one (else the run would report the old pruning without a word)."""
        if self.fired_with is None or self.fired_with == self.options():
            return
        changed = ", ".join(f"{key} {shorten(self.fired_with.get(key), 60)} -> "
                            f"{shorten(value, 60)}" for key, value in self.options().items()
                            if self.fired_with.get(key) != value)
        log(f"warning: strategy '{self.name}' pruned this run's model before the slim config "
            f"changed ({changed}); the checkpoint's pruning is kept: use a new checkpoint_path "
            "to prune as the config says now")

    def legacy_state(self, record):
        """An old checkpoint holding this strategy's plan: it has fired."""
        return {"fired": True}
