"""Where a run starts: the checkpoint it resumes (pruning plans replayed, tensors, LR schedule
and hook states restored) or the weights it loads.

Where training starts: the highest complete checkpoint in checkpoint_path
(a restart after a crash), else `compressor.init_model` (a checkpoint dir, or
weights), else the detection config's `weights` (a trained detector), else its
`pretrain_weights` (backbone weights, loaded partially), else random init. A
checkpoint's pruning plans are replayed before its tensors are loaded, and the
LR schedule continues at its iteration. The config itself is never stored, so
edits to it apply on restart.
"""
import os
import re

from slim.errors import UserError, shorten
from slim.runs.job import RunState

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
HOOK_STATES_KEY = "hooks"  # in CheckpointState.extra: {hook name: state_dict()}


def replayable_plans(checkpoint, programs):
    """The PrunePlans of `checkpoint`, proven to replay on `programs` before anything changes:
    each is parsed, then applied in order to clones of the programs, and every group it
    names must be a channel group there with the recorded channel count. CheckpointError
    naming the checkpoint otherwise; `programs` themselves are never touched here, so a
    refused checkpoint leaves nothing half pruned."""
    from slim.io.checkpoint import CheckpointError
    from slim.prune import PruneError, PrunePlan, analyze_program, apply_plan
    from slim.prune.apply import find_group
    try:
        plans = [PrunePlan.from_dict(record["plan"]) for record in checkpoint.state.pruning_plans]
        clones = [programs.eval.program.clone()]
        if not programs.env.is_distributed:  # fleet's train program is not analysed (ProgramSet.apply)
            clones.insert(0, programs.train.program.clone())
        for plan in plans:
            graphs = [analyze_program(clone) for clone in clones]
            for group_plan in plan.groups:
                if all(find_group(group_plan, graph) is None for graph in graphs):
                    raise PruneError(f"group '{shorten(group_plan.key[0], 80)}' is not in this model")
            apply_plan(plan, clones, graphs=graphs)
    except PruneError as error:
        raise CheckpointError(f"checkpoint '{checkpoint.path}': its pruning plans do not replay "
                              f"on this model ({error})") from None
    return plans


def replay_checkpoint(checkpoint, programs, scope, executor, only_parameters=False, plans=None):
    """Replay a checkpoint's pruning plans on `programs` and `scope` (so shapes match),
    then load its tensors (only the parameters with `only_parameters`). `plans` are the
    checkpoint's `replayable_plans` if the caller has them already."""
    from slim.io import checkpoint as checkpoint_lib
    for plan in plans if plans is not None else replayable_plans(checkpoint, programs):
        programs.apply(plan, scope)
    checkpoint_lib.load_checkpoint_persistables(checkpoint, programs.train.program, scope,
                                                executor, only_parameters=only_parameters)


def how_to_set(key, value):
    """How the user gives the setting `key` the value `value`, as a hint says it (rule (f):
    every hint is a command that works): a flag (`--resume_checkpoint`) as `-flag VALUE`, a
    slim config key (`compressor.init_model`) in the slim config file (-o overrides the
    detection config only), any other key (`weights`) as `-o key=VALUE`."""
    if key.startswith("-"):
        return f"{key} {value}"
    if key.startswith("compressor."):
        return f"set `{key.split('.', 1)[1]}: {value}` under `compressor:` in the slim config"
    return f"-o {key}={value}"


def how_to_unset(key):
    """How the user runs without the setting `key` (see `how_to_set`)."""
    if key.startswith("-"):
        return f"leave out {key}"
    if key.startswith("compressor."):
        return f"remove `{key.split('.', 1)[1]}` from `compressor:` in the slim config"
    return f"-o {key}=null"


def _local_path(key, path):
    """`path` if it exists locally; a UserError naming `key` for an empty value, URLs,
    archives and missing paths (an empty value is refused, never taken for "not given")."""
    if str(path).strip() == "":
        raise UserError(f"{key} is empty; name a local path ({how_to_set(key, 'PATH')}), or "
                        f"{how_to_unset(key)} to start without it")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(path)):
        raise UserError(f"{key} '{path}' is a URL and nothing can be downloaded here: download "
                        "(and extract) it yourself, then pass the local path, e.g. "
                        f"{how_to_set(key, '/path/to/dir')}")
    if not os.path.exists(path):
        raise UserError(f"{key} '{path}' does not exist; expected a directory of per-parameter "
                        "files, a combined params file, an eval_model dir or a checkpoint dir "
                        f"({how_to_set(key, 'PATH')}, or {how_to_unset(key)} to start without it)")
    if os.path.isfile(path) and str(path).endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"{key} '{path}' is an archive: extract it and pass the directory")
    return path


def load_weights_into(key, path, programs, scope, executor, place, partial, log):
    """Load `path` (see `_local_path`) into `scope` for `programs`; a checkpoint dir also
    replays its pruning plans. Returns the plan records replayed."""
    from slim.io import checkpoint as checkpoint_lib
    from slim.io.export import PARAMS_NAME, verify_model_manifest
    from slim.io.weights import load_weights
    path = _local_path(key, path)
    if os.path.isfile(os.path.join(path, checkpoint_lib.MANIFEST_NAME)):
        try:
            checkpoint = checkpoint_lib.validate_checkpoint(path)
            plans = replayable_plans(checkpoint, programs)
        except checkpoint_lib.CheckpointError as error:
            raise UserError(f"{key}: {error}") from None
        replay_checkpoint(checkpoint, programs, scope, executor, only_parameters=True, plans=plans)
        log(f"loaded {key} from checkpoint '{path}' (epoch {checkpoint.state.epoch}, "
            f"{len(checkpoint.state.pruning_plans)} pruning plan(s) replayed)")
        # Marked so that a resumed run replays them without taking them for its own strategies.
        return [dict(record, source=key) for record in checkpoint.state.pruning_plans]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, PARAMS_NAME)):
        verify_model_manifest(path, [PARAMS_NAME])  # an exported model's manifest, if it has one
        path = os.path.join(path, PARAMS_NAME)  # an eval_model dir: its combined params
    report = load_weights(scope, programs.eval.program, path, partial=partial, place=place)
    log(f"loaded {key} '{path}': {len(report.loaded)} parameters"
        + (f" ({len(report.missing)} not in the file keep their initial values)"
           if report.missing else ""))
    return []


def _usable_checkpoint(checkpoint_root, programs, log):
    """(the highest complete checkpoint in `checkpoint_root` whose pruning plans replay on
    `programs`, its plans), or (None, []). Every checkpoint passed over is a warning naming
    it, and so is falling back below the highest epoch."""
    from slim.io import checkpoint as checkpoint_lib
    if not checkpoint_root:
        return None, []
    for checkpoint in checkpoint_lib.complete_checkpoints(checkpoint_root, log=log):
        try:
            plans = replayable_plans(checkpoint, programs)
        except checkpoint_lib.CheckpointError as error:
            log(f"warning: skipping {error}")
            continue
        if checkpoint.state.epoch < checkpoint_lib.checkpoint_epochs(checkpoint_root)[0]:
            log(f"warning: resuming from the previous complete checkpoint '{checkpoint.path}' "
                "(the newer ones above were skipped)")
        return checkpoint, plans
    if checkpoint_lib.checkpoint_epochs(checkpoint_root):
        log(f"warning: no usable checkpoint in '{checkpoint_root}' (see above): training starts "
            "from the beginning and replaces them epoch by epoch")
    return None, []


def _starting_checkpoint(checkpoint_root, init_model, programs, log, init_key="compressor.init_model",
                         init_must_be_checkpoint=False):
    """(the checkpoint to resume from (see the module docstring) or None, its replayable
    plans, whether init_model names weights rather than a checkpoint). `init_key` names
    init_model in messages; with `init_must_be_checkpoint` (train.py -r) weights are refused."""
    from slim.io import checkpoint as checkpoint_lib
    latest, latest_plans = _usable_checkpoint(checkpoint_root, programs, log)
    if init_model is None:  # not given; an empty value is refused by _local_path
        return latest, latest_plans, False
    path = _local_path(init_key, init_model)
    if not os.path.isfile(os.path.join(path, checkpoint_lib.MANIFEST_NAME)):
        epochs = checkpoint_lib.checkpoint_epochs(path)
        if epochs:  # a checkpoint_path, not one checkpoint: its parameter files are not there
            raise UserError(f"{init_key} '{shorten(init_model)}' holds checkpoints "
                            f"(epochs {', '.join(map(str, sorted(epochs)[:8]))}), not one: name one "
                            f"of them, e.g. {shorten(os.path.join(init_model, str(max(epochs))))}")
        if init_must_be_checkpoint:
            raise UserError(f"{init_key} '{shorten(init_model)}' is not a checkpoint (it has no "
                            f"{checkpoint_lib.MANIFEST_NAME}); name an epoch directory that "
                            "train.py or compress.py wrote, e.g. output/<config name>/3")
        if latest is not None:
            log(f"resuming from '{latest.path}' in checkpoint_path; {init_key} '{init_model}' "
                "is not used")
            return latest, latest_plans, False
        return None, [], True
    try:
        chosen = checkpoint_lib.validate_checkpoint(path)
        if latest is not None and latest.state.epoch > chosen.state.epoch:
            log(f"resuming from '{latest.path}' (epoch {latest.state.epoch}), newer than "
                f"{init_key} '{init_model}' (epoch {chosen.state.epoch})")
            return latest, latest_plans, False
        return chosen, replayable_plans(chosen, programs), False
    except checkpoint_lib.CheckpointError as error:
        raise UserError(f"{init_key}: {error}") from None


def _check_schedule_fits(job, checkpoint):
    """UserError when the checkpoint's iteration is not where this run's epochs put the end
    of its epoch (max_iters changed since it was written): the run could not continue it."""
    epoch, iteration = int(checkpoint.state.epoch), int(checkpoint.state.iteration)
    expected = min((epoch + 1) * job.max_iters, job.total_iterations)
    if iteration == expected:
        return
    made_with = f" (max_iters {iteration // (epoch + 1)})" if iteration % (epoch + 1) == 0 else ""
    raise UserError(f"checkpoint '{shorten(checkpoint.path)}' ends epoch {epoch} at iteration "
                    f"{iteration}{made_with}, but this run's epochs of max_iters {job.max_iters} "
                    f"end it at iteration {expected}: resume with the max_iters it was made with, "
                    "or start a new checkpoint_path")


def restore_state(job):
    """Resume from a checkpoint (plans replayed, tensors, LR schedule and hook states
    restored) or load the starting weights; return the RunState to continue from."""
    state = RunState()
    start, plans, init_is_weights = _starting_checkpoint(
        job.compressor.checkpoint_path, job.compressor.init_model, job.programs, job.log,
        job.init_model_key, job.init_model_must_be_checkpoint)
    if start is not None:
        _check_schedule_fits(job, start)
        hook_states = checkpoint_hook_states(start, job.strategies)
        replay_checkpoint(start, job.programs, job.scope, job.executor, plans=plans)
        state = RunState(list(start.state.pruning_plans), start.state.epoch + 1,
                         int(start.state.iteration), start.state.best_metric,
                         start.state.best_epoch, list(start.state.extra.get("history", [])),
                         start.path, hook_states)
        job.log(f"resumed from checkpoint '{start.path}': epoch {start.state.epoch} done, "
                f"iteration {state.iteration}, {len(state.plan_records)} pruning plan(s) replayed")
    else:
        sources = [(job.init_model_key, job.compressor.init_model if init_is_weights else None,
                    False)] + [(key, job.cfg.get(key), key == "pretrain_weights")
                               for key in job.weights_keys]
        for key, path, partial in sources:
            if path is not None:  # set; an empty value is refused by _local_path
                state.plan_records = load_weights_into(key, path, job.programs, job.scope,
                                                       job.executor, job.place, partial, job.log)
                break
    job.scheduler.last_epoch = state.iteration  # continue the schedule where it left off
    job.scheduler.last_lr = job.scheduler.get_lr()
    return state


def checkpoint_hook_states(checkpoint, strategies):
    """The hook states `checkpoint` stores. A checkpoint written before hooks had states
    holds only pruning plans: each strategy whose plan it holds gets its `legacy_state`
    (UniformPruneStrategy: fired); a strategy that cannot take such a checkpoint over
    refuses it with a one-line CheckpointError."""
    from slim.io.checkpoint import CheckpointError
    extra = checkpoint.state.extra
    if HOOK_STATES_KEY in extra:
        states = extra[HOOK_STATES_KEY]
        if not isinstance(states, dict) or not all(isinstance(v, dict) for v in states.values()):
            raise CheckpointError(f"checkpoint '{checkpoint.path}': its hook states are not a "
                                  "mapping of hook names to mappings")
        return states
    states = {}
    by_name = {strategy.name: strategy for strategy in strategies}
    # Plans that came with `weights` ("source") belong to the starting model, not to a strategy.
    for record in checkpoint.state.pruning_plans:
        strategy = by_name.get(record.get("strategy"))
        if strategy is None or "source" in record:
            continue
        legacy = strategy.legacy_state(record)
        if legacy is None:
            raise CheckpointError(
                f"checkpoint '{checkpoint.path}' was written before strategies stored their "
                f"state and strategy '{strategy.name}' ({type(strategy).__name__}) cannot take "
                "it over; remove it (or start with another checkpoint_path)")
        states[strategy.name] = legacy
    return states
