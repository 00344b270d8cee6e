"""Issue #9 for checkpoints and exported models: nothing of the user's is replaced or deleted,
and nothing loaded is trusted without a check.

- checkpoint_path: an epoch-named entry the tool did not write is refused before training,
  untouched; only the tool's own dead temp dirs are cleaned up;
- a failed checkpoint write (a real file size limit, a monkeypatched full disk) is one line
  naming the checkpoint and the last complete one, leaves no temp dir, and a restart works;
- a checkpoint manifest covers itself: an edited one, a malformed pruning plan or one that
  does not replay makes resume fall back to the previous checkpoint with a warning, and
  nothing is half pruned; manifest file entries outside the checkpoint are never opened;
- exported models: every damaged `__params__` / `__model__`, with or without the model
  manifest, is one line and exit 2 from eval.py (and infer.py), never a traceback or zeros;
- a strategy that cannot be met (pruned_params, target_ratio) fails before the first iteration.
"""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import paddle
import pytest
from test_checkpoint import ROOT, _tiny_train_program, _trained_scope
from test_cli_errors import _exit_code_and_error
from test_compress import make_workspace, reference_run, write_slim_config

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
from slim.io import checkpoint as ck
from slim.io import export
from slim.io.file_manifest import seal
from slim.io.output_places import OWNER_MARKER, make_owned_temp_dir
from slim.io.weights import WeightsError, read_combined_records
from slim.model import MobileNet, YOLOv3, YOLOv3Head, build_eval_program
from slim.prune import GroupPlan, PruneError, PrunePlan, apply_plan, plan_pruning
from slim.runs.restore import _usable_checkpoint

TINY_GROUP = {"key": ["conv_weights", 0, 0], "channels_before": 4, "kept": [0, 2],
              "params": ["conv_weights", "bn_scale", "bn_offset", "bn_mean", "bn_var"]}


def _tree(root):
    """{relative path: file bytes or 'dir'} of everything under `root` (to prove it unchanged)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


@pytest.fixture(scope="module")
def tiny():
    """The tiny train program of test_checkpoint, trained one step: (program, scope, executor)."""
    main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    return types.SimpleNamespace(program=main, scope=scope, executor=executor)


def _save(tiny, root, epoch, plans=(), **kwargs):
    state = ck.CheckpointState(epoch, 2 * (epoch + 1), pruning_plans=[
        {"strategy": "uniform", "epoch": 0, "plan": plan} for plan in plans])
    return ck.save_checkpoint(str(root), state, tiny.program, tiny.scope, tiny.executor, **kwargs)


def _edit_manifest(checkpoint_dir, edit, reseal=True):
    """Apply `edit(manifest)` to a checkpoint's manifest; reseal it so only the edit's
    content (not the checksum) is what a reader can object to."""
    path = os.path.join(checkpoint_dir, ck.MANIFEST_NAME)
    with open(path) as handle:
        manifest = json.load(handle)
    edit(manifest)
    with open(path, "w") as handle:
        json.dump(seal(manifest) if reseal else manifest, handle)


# ----------------------------------------------------------------------------- checkpoint_path

def test_user_epoch_dir_in_checkpoint_path_is_refused_untouched(tmp_path, capsys, monkeypatch):
    paths = make_workspace(str(tmp_path))
    checkpoints = tmp_path / "ckpt"
    (checkpoints / "0").mkdir(parents=True)
    (checkpoints / "0" / "thesis.tex").write_text("years of work")
    (checkpoints / ".tmp-x").mkdir()
    (checkpoints / ".tmp-x" / "keep.txt").write_text("mine")
    (checkpoints / ".old-1-999999999").write_text("a file of mine")
    before = _tree(checkpoints)
    slim_file = write_slim_config(str(tmp_path), "slim.yaml", epochs=2)
    monkeypatch.chdir(tmp_path)
    code, error = _exit_code_and_error(capsys, compress_cli.main, ["-s", slim_file, "-c", paths["config"]])
    assert code == 2
    assert "compressor.checkpoint_path: 'ckpt/0' is named like a checkpoint epoch but was not " \
           "written by this tool" in error and "left untouched" in error
    assert _tree(checkpoints) == before


def test_check_checkpoint_root_knows_the_tools_dirs(tmp_path, tiny):
    _save(tiny, tmp_path, 2)                                     # new: marker + sealed manifest
    _save(tiny, tmp_path, 3)
    os.remove(tmp_path / "3" / OWNER_MARKER)                     # older slim: its manifest says so
    (tmp_path / "notes").mkdir()                                 # not epoch-named: not ours to judge
    ck.check_checkpoint_root(str(tmp_path))
    for name, make in (("1", lambda p: p.write_text("a user's file")),
                       ("007", lambda p: p.mkdir()),
                       ("4", lambda p: p.symlink_to(tmp_path / "2")),
                       ("5", lambda p: (p.mkdir(), (p / ck.MANIFEST_NAME).write_text('{"format": "x"}')))):
        make(tmp_path / name)
        with pytest.raises(ck.CheckpointError, match=f"'{tmp_path / name}' is named like a "
                                                     "checkpoint epoch but was not written"):
            ck.check_checkpoint_root(str(tmp_path))
        (tmp_path / name).unlink() if not (tmp_path / name).is_dir() or (tmp_path / name).is_symlink() \
            else shutil.rmtree(tmp_path / name)


def test_save_never_replaces_a_user_dir_of_its_epoch(tmp_path, tiny):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "data.csv").write_text("1,2,3")
    with pytest.raises(ck.CheckpointError, match=r"'.*/0' is named like a checkpoint epoch"):
        _save(tiny, tmp_path, 0)
    assert sorted(os.listdir(tmp_path)) == ["0"] and os.listdir(tmp_path / "0") == ["data.csv"]


def test_a_users_file_inside_the_tools_checkpoint_is_never_deleted(tmp_path, tiny):
    """infer.py --output_dir inside a checkpoint, or notes put there: the run stops before
    training (check_checkpoint_root) and a save of that epoch is refused; nothing deleted."""
    checkpoint = _save(tiny, tmp_path, 0)
    os.makedirs(os.path.join(checkpoint, "eval_model", "drawn"))
    with open(os.path.join(checkpoint, "eval_model", "drawn", "a.jpg"), "w") as handle:
        handle.write("drawn by the user's infer run")
    before = _tree(tmp_path)
    for attempt in (lambda: ck.check_checkpoint_root(str(tmp_path)), lambda: _save(tiny, tmp_path, 0)):
        with pytest.raises(ck.CheckpointError, match=r"/0' was written by this tool but now also "
                                                     r"holds 'eval_model'"):
            attempt()
    os.rename(checkpoint, tmp_path / ".old-0-999999999-abc")  # as a crash mid-rewrite leaves it
    os.makedirs(tmp_path / "0")
    ck.remove_stale_temp_dirs(str(tmp_path))
    assert (tmp_path / ".old-0-999999999-abc" / "eval_model" / "drawn" / "a.jpg").is_file()
    assert len(before) == len(_tree(tmp_path)) - 1  # only the empty '0' added


def test_stale_cleanup_touches_only_dead_writers_own_dirs(tmp_path, tiny):
    _save(tiny, tmp_path, 0)
    dead = make_owned_temp_dir(str(tmp_path), ".tmp-5-999999999-")
    live = make_owned_temp_dir(str(tmp_path), f".tmp-5-{os.getppid()}-")  # a running process
    (tmp_path / ".tmp-x").mkdir()                                         # the user's
    (tmp_path / ".tmp-5-999999998").mkdir()                               # named alike, unmarked
    (tmp_path / ".old-6-999999999").write_text("a user's file")
    # a crash between the two renames of a rewrite left epoch 0's previous checkpoint as .old-*
    os.rename(tmp_path / "0", tmp_path / ".old-0-999999999-abc")
    handled = ck.remove_stale_temp_dirs(str(tmp_path))
    assert sorted(handled) == sorted([os.path.basename(dead), ".old-0-999999999-abc"])
    assert sorted(os.listdir(tmp_path)) == sorted([".old-6-999999999", ".tmp-5-999999998", ".tmp-x",
                                                   "0", os.path.basename(live)])
    assert ck.latest_complete_checkpoint(str(tmp_path)).state.epoch == 0  # put back intact


# ----------------------------------------------------------------------------- write failures

def test_failed_write_is_one_line_without_leftovers_and_a_retry_works(tmp_path, tiny, monkeypatch):
    first = _save(tiny, tmp_path, 0)
    real_write = ck._write_file

    def full_disk(path, data):
        if path.endswith(ck.PLANS_NAME):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, data)
    monkeypatch.setattr(ck, "_write_file", full_disk)
    with pytest.raises(ck.CheckpointError) as failure:
        _save(tiny, tmp_path, 1, last_complete=first)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write checkpoint '{tmp_path / '1'}': No space left on device: ")
    assert message.endswith(f"the last complete checkpoint '{first}' is kept")
    assert sorted(os.listdir(tmp_path)) == ["0"]  # the partial temp dir is gone
    monkeypatch.setattr(ck, "_write_file", real_write)
    _save(tiny, tmp_path, 1)
    assert sorted(os.listdir(tmp_path)) == ["0", "1"]


def test_failed_extra_writer_is_one_line_too(tmp_path, tiny):
    def read_only(temp_dir):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), temp_dir)
    with pytest.raises(ck.CheckpointError, match=r"cannot write checkpoint '.*/0': Permission "
                                                 r"denied: .*no checkpoint of this run was complete"):
        _save(tiny, tmp_path, 0, extra_writer=read_only)
    assert os.listdir(tmp_path) == []


SIZE_LIMITED_WRITER = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, {root!r})
    import slim, paddle
    paddle.enable_static()
    sys.path.insert(0, {tests!r})
    from test_checkpoint import _tiny_train_program, _trained_scope
    from slim.io import checkpoint as ck
    main, startup, loss = _tiny_train_program(out_channels=64)
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    epoch, limit = int(sys.argv[1]), int(sys.argv[2])
    if limit:  # writes past the limit fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        ck.save_checkpoint({root_dir!r}, ck.CheckpointState(epoch, 1), main, scope, executor,
                           last_complete=sys.argv[3] or None)
    except ck.CheckpointError as error:
        print("error:", error)
        sys.exit(2)
""")


def test_real_file_size_limit_during_a_write(tmp_path):
    root_dir = str(tmp_path / "ckpt")
    script = tmp_path / "writer.py"
    script.write_text(SIZE_LIMITED_WRITER.format(root=ROOT, tests=os.path.join(ROOT, "tests"),
                                                 root_dir=root_dir))

    def write(epoch, limit):
        return subprocess.run([sys.executable, str(script), str(epoch), str(limit),
                               os.path.join(root_dir, "0")], capture_output=True, text=True)
    assert write(0, 0).returncode == 0
    limited = write(1, 4096)  # the persistables of 64 filters (and their momentum) are larger
    assert limited.returncode == 2, limited.stderr[-2000:]
    assert "Traceback" not in limited.stderr
    assert re.fullmatch(f"error: cannot write checkpoint '{root_dir}/1': File too large: "
                        f"'{root_dir}/.tmp-1-[0-9]+-[a-z0-9_]+/persistables'; the last complete "
                        f"checkpoint '{root_dir}/0' is kept\n", limited.stdout), limited.stdout
    assert sorted(os.listdir(root_dir)) == ["0"]
    assert write(1, 0).returncode == 0  # the restart needs no clean-up by hand
    assert sorted(os.listdir(root_dir)) == ["0", "1"]
    assert ck.latest_complete_checkpoint(root_dir).state.epoch == 1


# ----------------------------------------------------------------------------- damaged manifests

@pytest.fixture
def two_epochs(tmp_path, tiny):
    """Checkpoints 0 and 1 of the tiny program; returns the root."""
    _save(tiny, tmp_path, 0)
    _save(tiny, tmp_path, 1, plans=[{"groups": [TINY_GROUP]}])
    return tmp_path


def test_edited_manifest_falls_back_to_the_previous_checkpoint(two_epochs):
    _edit_manifest(two_epochs / "1", lambda m: m["state"].update(iteration=5), reseal=False)
    warnings = []
    assert ck.latest_complete_checkpoint(str(two_epochs), log=warnings.append).state.epoch == 0
    assert warnings == [f"warning: skipping checkpoint '{two_epochs / '1'}' is damaged: manifest.json "
                        "does not match its own checksum (it was edited or damaged after it was "
                        "written)"]


def test_version_1_manifest_is_read_with_a_warning(two_epochs):
    def as_version_1(manifest):
        manifest["version"] = 1
        del manifest["checksum"]
    _edit_manifest(two_epochs / "1", as_version_1, reseal=False)
    warnings = []
    checkpoint = ck.latest_complete_checkpoint(str(two_epochs), log=warnings.append)
    assert checkpoint.state.epoch == 1 and not checkpoint.sealed
    assert len(warnings) == 1 and "version-1 manifest without a checksum" in warnings[0]


@pytest.mark.parametrize("entry", ["../secret.env", "eval_model/../../secret.env", "/SECRET",
                                   "./persistables", "", "a//b"])
def test_file_entry_outside_the_checkpoint_is_rejected_unopened(two_epochs, entry, monkeypatch):
    secret = two_epochs / "secret.env"
    secret.write_text("TOKEN=" + "x" * 12339)  # 12345 bytes
    entry = entry.replace("/SECRET", str(secret))
    _edit_manifest(two_epochs / "1", lambda m: m["files"].update(
        {entry: {"size": 1, "sha256": "0" * 64}}))
    opened = _record_hashed_files(monkeypatch)
    warnings = []
    assert ck.latest_complete_checkpoint(str(two_epochs), log=warnings.append).state.epoch == 0
    assert "which is not a plain relative name inside its directory" in warnings[0]
    assert not any("secret" in path for path in opened)
    assert "12345" not in warnings[0]


def test_symlink_leading_outside_the_checkpoint_is_rejected(two_epochs):
    outside = two_epochs / "outside.txt"
    outside.write_text("x" * 777)
    os.symlink(outside, two_epochs / "1" / "link")
    _edit_manifest(two_epochs / "1", lambda m: m["files"].update(
        {"link": {"size": 777, "sha256": "0" * 64}}))
    warnings = []
    assert ck.latest_complete_checkpoint(str(two_epochs), log=warnings.append).state.epoch == 0
    assert warnings[0].endswith("is damaged: link leads outside the directory (a symlink)")


def _record_hashed_files(monkeypatch):
    """The list of paths file_manifest hashes from now on (each still hashed)."""
    from slim.io import file_manifest
    opened, real_sha256 = [], file_manifest.file_sha256

    def recording_sha256(path):
        opened.append(str(path))
        return real_sha256(path)
    monkeypatch.setattr(file_manifest, "file_sha256", recording_sha256)
    return opened


def _rename_kept(plan):
    plan["groups"][0]["keep"] = plan["groups"][0].pop("kept")


@pytest.mark.parametrize("edit, reason", [
    (_rename_kept, "group lacks 'kept'"),
    (lambda plan: plan["groups"][0].update(kept=[0, 99]), r"kept indices must be distinct, in \[0, 4\)"),
    (lambda plan: plan["groups"][0].update(channels_before="4"), "channels_before must be a count"),
    (lambda plan: plan["groups"][0].update(key="conv_weights"), r"group key must be \[param, axis, start\]"),
    (lambda plan: plan["groups"].append(None), "a group must be a mapping"),
    (lambda plan: plan.update(groups={}), "expected a mapping with a 'groups' list"),
])
def test_malformed_plan_falls_back_to_the_previous_checkpoint(two_epochs, edit, reason):
    _edit_manifest(two_epochs / "1", lambda m: edit(m["state"]["pruning_plans"][0]["plan"]))
    warnings = []
    assert ck.latest_complete_checkpoint(str(two_epochs), log=warnings.append).state.epoch == 0
    assert len(warnings) == 1 and f"checkpoint '{two_epochs / '1'}' is damaged: pruning plan 0 " \
                                  "(uniform) is malformed: " in warnings[0]
    assert re.search(reason, warnings[0]), warnings[0]


@pytest.mark.parametrize("data", [
    None, [], {"groups": None}, {"groups": [[0, 2]]}, {"groups": [{}]}, {"version": "1", "groups": []},
    {"groups": [dict(TINY_GROUP, key=["w", "0", 0])]}, {"groups": [dict(TINY_GROUP, kept=[0.5])]},
    {"groups": [dict(TINY_GROUP, kept=None)]}, {"groups": [dict(TINY_GROUP, params="w")]},
    {"groups": [dict(TINY_GROUP, channels_before=True)]}, {"groups": [dict(TINY_GROUP, key=[])]},
    {"groups": [], "matched": "w"}, {"groups": [], "ratio": "half"}, {"groups": [], "skipped": []},
])
def test_plan_from_dict_raises_only_prune_errors(data):
    with pytest.raises(PruneError):
        PrunePlan.from_dict(data)


def test_group_plan_round_trip():
    group = GroupPlan.from_dict(TINY_GROUP)
    assert GroupPlan.from_dict(group.to_dict()) == group and group.removed == [1, 3]


# ----------------------------------------------------------------------------- replay on programs

def _programs():
    """A stand-in for the driver's ProgramSet: the tiny train and eval programs."""
    train, _, _ = _tiny_train_program()
    evaluation, _, _ = _tiny_train_program()
    return types.SimpleNamespace(train=types.SimpleNamespace(program=train),
                                 eval=types.SimpleNamespace(program=evaluation),
                                 env=types.SimpleNamespace(is_distributed=False))


def _shapes(program):
    return {var.name: tuple(var.shape) for var in program.list_vars() if var.persistable}


@pytest.mark.parametrize("second_plan", [
    {"groups": [TINY_GROUP]},                                             # already applied: 2 channels now
    {"groups": [dict(TINY_GROUP, key=["no_such_weights", 0, 0], params=["no_such_weights"])]},
    {"groups": [dict(TINY_GROUP, channels_before=9, kept=[0, 8])]},      # more channels than the group
])
def test_plans_that_do_not_replay_are_skipped_and_nothing_is_half_pruned(tmp_path, tiny, second_plan):
    _save(tiny, tmp_path, 0, plans=[{"groups": [TINY_GROUP]}])
    _save(tiny, tmp_path, 1, plans=[{"groups": [TINY_GROUP]}, second_plan])
    programs = _programs()
    before = (_shapes(programs.train.program), _shapes(programs.eval.program))
    warnings = []
    checkpoint, plans = _usable_checkpoint(str(tmp_path), programs, warnings.append)
    assert checkpoint.state.epoch == 0 and len(plans) == 1
    assert warnings[0].startswith(f"warning: skipping checkpoint '{tmp_path / '1'}': its pruning "
                                  "plans do not replay on this model (")
    assert warnings[1] == (f"warning: resuming from the previous complete checkpoint "
                           f"'{tmp_path / '0'}' (the newer ones above were skipped)")
    assert (_shapes(programs.train.program), _shapes(programs.eval.program)) == before


def test_no_usable_checkpoint_is_said(tmp_path, tiny):
    _save(tiny, tmp_path, 0, plans=[{"groups": [dict(TINY_GROUP, channels_before=9, kept=[8])]}])
    warnings = []
    assert _usable_checkpoint(str(tmp_path), _programs(), warnings.append) == (None, [])
    assert warnings[-1].startswith(f"warning: no usable checkpoint in '{tmp_path}'")


# ----------------------------------------------------------------------------- resume end to end

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


def _resume_with(reference, tmp_path, capsys, monkeypatch, damage):
    """Copy the reference run's checkpoints, damage epoch 2 with `damage(dir)`, run the same
    compress command again; return its output and the final checkpoint."""
    os.symlink(os.path.join(reference["root"], "data"), tmp_path / "data")
    paths = make_workspace(str(tmp_path))
    shutil.copytree(reference["checkpoints"], tmp_path / "ckpt", symlinks=True)
    damage(str(tmp_path / "ckpt" / "2"))
    slim_file = write_slim_config(str(tmp_path), "slim.yaml")
    monkeypatch.chdir(tmp_path)
    compress_cli.main(["-s", slim_file, "-c", paths["config"]])
    captured = capsys.readouterr()
    return captured.out + captured.err, ck.latest_complete_checkpoint(str(tmp_path / "ckpt"))


@pytest.mark.parametrize("damage, reason", [
    (lambda path: _edit_manifest(path, lambda m: m["state"].update(iteration=7), reseal=False),
     "is damaged: manifest.json does not match its own checksum"),
    (lambda path: _edit_manifest(path, lambda m: m["state"]["pruning_plans"][0]["plan"]["groups"][0]
                                 .update(kept=[0, 1000], channels_before=1001)),
     "its pruning plans do not replay on this model"),
])
def test_damaged_last_checkpoint_resumes_from_the_previous_and_matches(reference, tmp_path, capsys,
                                                                       monkeypatch, damage, reason):
    output, final = _resume_with(reference, tmp_path, capsys, monkeypatch, damage)
    assert f"warning: skipping checkpoint 'ckpt/2'{':' if 'replay' in reason else ''} " in output
    assert reason in output
    assert "warning: resuming from the previous complete checkpoint 'ckpt/1'" in output
    assert "resumed from checkpoint 'ckpt/1': epoch 1 done, iteration 4, 1 pruning plan(s)" in output
    expected = ck.validate_checkpoint(os.path.join(reference["checkpoints"], "2"))
    assert final.state.epoch == 2 and final.state.iteration == expected.state.iteration == 6
    resumed, wanted = ck.read_checkpoint_tensors(final), ck.read_checkpoint_tensors(expected)
    assert resumed.keys() == wanted.keys()
    for name, value in wanted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


# ----------------------------------------------------------------------------- strategies

@pytest.mark.parametrize("old, new, expected", [
    (r"pruned_params: .*$", "pruned_params: 'no_such_conv_.*'", r"matches no conv weight"),
    (r"pruned_params: .*$", "pruned_params: '(conv'", r"invalid regex"),
    (r"target_ratio: 0.5", "target_ratio: 0.95", r"target_ratio 0.95 is out of reach|no uniform ratio"),
])
def test_strategy_that_cannot_be_met_fails_before_training(tmp_path, capsys, monkeypatch, old, new,
                                                           expected):
    paths = make_workspace(str(tmp_path))
    slim_file = write_slim_config(str(tmp_path), "slim.yaml")
    with open(slim_file) as handle:
        text = handle.read()
    changed = re.sub(old, new, text, count=1, flags=re.MULTILINE)
    assert changed != text
    with open(slim_file, "w") as handle:
        handle.write(changed)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        compress_cli.main(["-s", slim_file, "-c", paths["config"]])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in captured.err
    assert "strategy 'uniform_pruning_strategy'" in errors[0] and "nothing was trained" in errors[0]
    assert re.search(expected, errors[0]), errors[0]
    assert " iter " not in captured.out  # not one iteration ran
    assert not os.path.isdir(tmp_path / "ckpt") or not os.listdir(tmp_path / "ckpt")


# ----------------------------------------------------------------------------- exported models

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small unpruned and a pruned export of the same model, and the tiny workspace config."""
    root = tmp_path_factory.mktemp("integrity_models")
    workspace = make_workspace(str(root / "workspace"))
    model = YOLOv3(MobileNet(conv_group_scale=0.125), YOLOv3Head(num_classes=5, width_scale=0.125))
    evaluation = build_eval_program(model, image_shape=[3, 64, 64])
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(evaluation.startup, scope=scope)
    export.export_model(evaluation, scope, executor, str(root / "unpruned"))
    plan = plan_pruning(evaluation.program, scope, "auto", ratio=0.5)
    apply_plan(plan, [evaluation.program], scope)
    export.export_model(evaluation, scope, executor, str(root / "pruned"))
    return {"root": root, "config": workspace["config"], "workspace": workspace["root"],
            "unpruned": str(root / "unpruned"),
            "pruned": str(root / "pruned")}


def _rewrite(path, change):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(change(data))


def _replace_with_unpruned(models, model_dir):
    shutil.copyfile(os.path.join(models["unpruned"], "__model__.infer"),
                    os.path.join(model_dir, "__model__.infer"))


DAMAGES = {  # name -> (damage(models, model_dir), file named without a manifest)
    "params_truncated_4": (lambda m, d: _rewrite(os.path.join(d, "__params__"), lambda b: b[:-4]),
                           "__params__' is truncated"),
    "params_truncated_4000": (lambda m, d: _rewrite(os.path.join(d, "__params__"), lambda b: b[:-4000]),
                              "__params__' is truncated"),
    "params_empty": (lambda m, d: _rewrite(os.path.join(d, "__params__"), lambda b: b""),
                     "__params__' holds 0 tensors but"),
    "params_random": (lambda m, d: _rewrite(os.path.join(d, "__params__"),
                                            lambda b: np.random.default_rng(1).bytes(len(b))),
                      "__params__' is not Paddle's tensor format at byte 0"),
    "params_too_long": (lambda m, d: _rewrite(os.path.join(d, "__params__"), lambda b: b + b"\0" * 40),
                        "__params__' is not Paddle's tensor format at byte"),
    "params_one_byte_more": (lambda m, d: _rewrite(os.path.join(d, "__params__"), lambda b: b + b"\1"),
                             "__params__' is not Paddle's tensor format at byte"),
    "model_random": (lambda m, d: _rewrite(os.path.join(d, "__model__.infer"),
                                           lambda b: np.random.default_rng(2).bytes(len(b))),
                     "__model__.infer' is not a Paddle program"),
    "model_truncated": (lambda m, d: _rewrite(os.path.join(d, "__model__.infer"), lambda b: b[:len(b) // 2]),
                        "__model__.infer' is not a Paddle program"),
    "model_of_the_unpruned_model": (_replace_with_unpruned, "__params__' does not fit"),
}


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "no_manifest"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_model_is_one_line_exit_2_from_eval(models, tmp_path, capsys, damage, with_manifest):
    model_dir = str(tmp_path / "model")
    shutil.copytree(models["pruned"], model_dir)
    if not with_manifest:
        os.remove(os.path.join(model_dir, export.MODEL_MANIFEST_NAME))
    make_damage, named = DAMAGES[damage]
    make_damage(models, model_dir)
    code, error = _exit_code_and_error(capsys, eval_cli.main, [
        "-m", model_dir, "--model_name", "__model__.infer", "--params_name", "__params__",
        "-c", models["config"]])
    assert code == 2
    if with_manifest:
        damaged_file = "__model__.infer" if damage.startswith("model") else "__params__"
        assert f"exported model '{model_dir}' is damaged: {damaged_file} " in error, error
    else:
        assert f"{model_dir}/{named}" in error, error


def test_edited_model_manifest_is_refused(models, tmp_path, capsys):
    model_dir = str(tmp_path / "model")
    shutil.copytree(models["pruned"], model_dir)
    manifest_path = os.path.join(model_dir, export.MODEL_MANIFEST_NAME)
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest["files"]["__params__"]["size"] += 1
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    image = os.path.join(models["workspace"], "data", "JPEGImages", "test_00000.jpg")
    code, error = _exit_code_and_error(capsys, infer_cli.main, [
        "--model_path", model_dir, "-c", models["config"], "--infer_img", image,
        "--output_dir", str(tmp_path / "out")])
    assert code == 2
    assert error == (f"error: exported model '{model_dir}' is damaged: model_manifest.json does not "
                     "match its own checksum (it was edited or damaged after it was written)")


def test_model_manifest_entry_outside_is_rejected_unopened(models, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "model")
    shutil.copytree(models["pruned"], model_dir)
    (tmp_path / "secret.env").write_text("TOKEN=" + "y" * 4000)
    manifest_path = os.path.join(model_dir, export.MODEL_MANIFEST_NAME)
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest["files"]["../secret.env"] = {"size": 1, "sha256": "0" * 64}
    with open(manifest_path, "w") as handle:
        json.dump(seal(manifest), handle)
    opened = _record_hashed_files(monkeypatch)
    with pytest.raises(export.UserError, match=r"lists '\.\./secret\.env', which is not a plain "
                                               r"relative name") as failure:
        export.load_exported_program(model_dir, paddle.static.Executor(paddle.CPUPlace()),
                                     paddle.static.Scope())
    assert not any("secret" in path for path in opened) and "4006" not in str(failure.value)


@pytest.mark.parametrize("with_manifest", [True, False])
def test_intact_models_load_with_and_without_manifest(models, tmp_path, with_manifest):
    model_dir = str(tmp_path / "model")
    shutil.copytree(models["pruned"], model_dir)
    if not with_manifest:
        os.remove(os.path.join(model_dir, export.MODEL_MANIFEST_NAME))
    program, feeds, fetches = export.load_exported_program(
        model_dir, paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope())
    assert feeds == ["image", "im_size"] and len(fetches) == 2


# ----------------------------------------------------------------------------- the record reader

def test_combined_reader_requires_the_last_record_complete_and_nothing_after(tmp_path, models):
    params = os.path.join(models["pruned"], "__params__")
    records = read_combined_records(params)
    with open(params, "rb") as handle:
        data = handle.read()
    assert records[-1].data_offset + records[-1].data_size == len(data)
    for name, damaged in (("short", data[:-1]), ("long", data + b"\0\0\0\0")):
        path = tmp_path / name
        path.write_bytes(damaged)
        with pytest.raises(WeightsError, match=f"weights file '{path}' is "
                                               r"(truncated: tensor \d+ .* needs 1 more bytes|"
                                               r"not Paddle's tensor format at byte)"):
            read_combined_records(str(path))


def test_a_second_run_into_the_same_checkpoint_path_is_refused_while_the_first_runs(tmp_path):
    """Two runs into one checkpoint_path would overwrite each other's epochs: the second is
    one line naming the path; once the first is done it is free."""
    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from slim.io import checkpoint as ck; "
        "lock = ck.lock_checkpoint_root(%r); print('locked', flush=True); time.sleep(60)")
        % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ck.CheckpointError, match=f"'{tmp_path}' is in use by another run; "):
            ck.lock_checkpoint_root(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    ck.lock_checkpoint_root(str(tmp_path)).close()
    assert os.listdir(tmp_path) == []  # the lock leaves nothing in checkpoint_path
