"""Sensitivity analysis and SensitivePruneStrategy (issue 11, items 1 and 2).

The search (curves -> per-group ratios meeting a FLOPs target) is checked exactly on
hand-made curves; the measurement on the fitted demo model (tests/fitted_model.py: it
detects, so pruning a group really costs mAP): the masked evaluation equals the really
pruned program's, a rerun measures only what is missing, a file of another model is
refused; then `python -m slim sensitivity`, compress.py with the strategy (per-group
ratios, resumed without a second prune) and `inspect -s`.
"""
import contextlib
import io
import json
import os
import re
import types

import numpy as np
import pytest
from fitted_model import DEMO_CONFIG, fitted_model
from test_cli_errors import _exit_code_and_error
from test_compress import FITTED_RUN_OPTIONS

import compress as compress_cli
from slim.prune import PruneError
from slim.prune.sensitivity import (
    TIE_SLOPE,
    ratio_for_loss,
    search_ratios_by_loss,
    sensitivity_ratios,
)

# Three backbone groups of the demo model (width 0.25): few enough to measure in seconds.
MEASURED = ["conv2_1_sep_weights", "conv4_1_sep_weights", "conv5_1_sep_weights"]

SLIM_CONFIG = """
version: 1.0
pruners:
  pruner_1: {class: StructurePruner, pruning_axis: {'*': 0}, criterions: {'*': l1_norm}}
strategies:
  sensitive:
    class: SensitivePruneStrategy
    pruner: pruner_1
    start_epoch: 1
    target_ratio: TARGET
    delta_rate: DELTA
    pruned_params: PARAMS
    sensitivities_file: FILE
compressor:
  epoch: 2
  eval_epoch: 1
  checkpoint_path: CKPT
  strategies: [sensitive]
"""


def write_slim(path, sensitivities_file, delta=0.5, target=0.02, params=MEASURED,
               checkpoint="ckpt"):
    text = (SLIM_CONFIG.replace("TARGET", str(target)).replace("DELTA", str(delta))
            .replace("PARAMS", json.dumps(params)).replace("FILE", str(sensitivities_file))
            .replace("CKPT", str(checkpoint)))
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


# ---- the search, on hand-made curves -------------------------------------------------------

def test_ratios_are_multiples_of_delta_rate_below_one():
    assert sensitivity_ratios(0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert sensitivity_ratios(0.2) == [0.2, 0.4, 0.6, 0.8]
    assert sensitivity_ratios(0.25) == [0.25, 0.5, 0.75]
    with pytest.raises(PruneError, match=r"delta_rate must be a number in \(0, 1\)"):
        sensitivity_ratios(1.0)


def test_a_groups_ratio_is_where_its_interpolated_loss_first_rises_above_the_threshold():
    curve = {0.2: 0.0, 0.4: 0.1, 0.6: 0.3}
    # between (0.2, 0) and (0.4, 0.1): loss 0.05 at 0.3 (the tie slope moves it by < 1e-5)
    assert ratio_for_loss(curve, 0.05) == pytest.approx(0.3, abs=1e-5)
    assert ratio_for_loss(curve, 0.2) == pytest.approx(0.5, abs=1e-5)
    assert ratio_for_loss(curve, 0.5) == 0.6       # never above: the last measured ratio
    assert ratio_for_loss(curve, 0.0) == 0.0       # every ratio costs something
    # not monotone: the first crossing counts, a later dip does not
    assert ratio_for_loss({0.2: 0.1, 0.4: 0.0}, 0.05) == pytest.approx(0.1, abs=1e-5)
    # a negative loss counts as 0
    assert ratio_for_loss({0.5: -0.2, 0.9: 0.4}, 0.1) == pytest.approx(0.5 + 0.4 * 0.1 / 0.4,
                                                                       abs=1e-5)


def _linear_removed(shares):
    """FLOPs removed when group g loses ratio r of its channels: sum of shares[g] * r."""
    return lambda ratios: sum(shares[name] * ratios.get(name, 0.0) for name in shares)


def test_the_search_prunes_the_insensitive_groups_most_and_meets_the_target():
    curves = {"a": {0.3: 0.0, 0.6: 0.02, 0.9: 0.5},
              "b": {0.3: 0.1, 0.6: 0.4, 0.9: 0.8},
              "c": {0.3: 0.0, 0.6: 0.0, 0.9: 0.0}}
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    ratios, threshold, removed = search_ratios_by_loss(curves, _linear_removed(shares), 0.5,
                                                       tolerance=1e-9)
    # By hand: c costs nothing -> 0.9. For t in (0.02, 0.1): a = 0.6 + 0.3 (t - 0.02) / 0.48,
    # b = 0.3 t / 0.1; 0.5 a + 0.3 b + 0.2 * 0.9 = 0.5 gives t = 0.02625 / 1.2125.
    t = 0.02625 / 1.2125
    assert threshold == pytest.approx(t, abs=1e-5)
    assert ratios["c"] == 0.9
    assert ratios["a"] == pytest.approx(0.6 + 0.3 * (t - 0.02) / 0.48, abs=1e-5)
    assert ratios["b"] == pytest.approx(3 * t, abs=1e-5)
    assert removed == pytest.approx(0.5, abs=1e-9)
    assert _linear_removed(shares)(ratios) == removed


def test_tied_curves_are_pruned_by_one_ratio():
    curves = {name: {0.5: 0.0, 0.9: 0.0} for name in "abc"}
    ratios, _, removed = search_ratios_by_loss(curves, _linear_removed(dict.fromkeys("abc", 1 / 3)),
                                               0.45, tolerance=1e-6)
    assert ratios == pytest.approx(dict.fromkeys("abc", 0.45), abs=1e-5)
    assert removed == pytest.approx(0.45, abs=1e-6)
    assert TIE_SLOPE * 0.9 < 1e-5  # far below any mAP difference of a real eval set


def test_an_unreachable_or_unmeetable_target_is_one_line():
    curves = {"a": {0.5: 0.1, 0.9: 0.2}}
    with pytest.raises(PruneError, match=r"target_ratio 0.95 is out of reach: .* removes only "
                                         r"90.0% of the FLOPs"):
        search_ratios_by_loss(curves, _linear_removed({"a": 1.0}), 0.95)
    steps = lambda ratios: 0.5 * (ratios["a"] >= 0.5)  # noqa: E731 - FLOPs in one step of 50%
    with pytest.raises(PruneError, match=r"no loss threshold removes 25.0% .* the closest "
                                         r"removes (0.00|50.00)%"):
        search_ratios_by_loss(curves, steps, 0.25)


def test_the_file_stores_metric_loss_and_relative_loss_per_ratio(tmp_path):
    from slim.strategies.sensitive_prune import SensitivityFile
    identity = {"params": {"w": [4, 3, 1, 1]}, "eval_rate": 0.5, "criterion": "l1_norm"}
    store = SensitivityFile(str(tmp_path / "s.json"), identity, baseline=0.8)
    group = types.SimpleNamespace(params=["w"], size=4)
    store.record("w", group, 0.5, 0.6)
    store.record("w", group, 0.25, 0.9)
    losses = store.losses("w")
    assert sorted(losses) == [0.25, 0.5]
    assert losses[0.5] == pytest.approx((0.2, 0.25)) and losses[0.25] == pytest.approx((-0.1, -0.125))
    assert store.curves(["w"], [0.25, 0.5])["w"] == pytest.approx({0.25: -0.1, 0.5: 0.2})
    assert store.missing(["w", "v"], [0.25, 0.5, 0.75]) == [("w", 0.75), ("v", 0.25), ("v", 0.5),
                                                            ("v", 0.75)]
    reread = SensitivityFile.open(str(tmp_path / "s.json"), identity)
    assert (reread.baseline, reread.groups["w"]["metric"]) == (0.8, {"0.5": 0.6, "0.25": 0.9})
    saved = json.loads((tmp_path / "s.json").read_text())["groups"]["w"]
    assert saved["loss"] == pytest.approx({"0.5": 0.2, "0.25": -0.1})
    assert saved["relative_loss"] == pytest.approx({"0.5": 0.25, "0.25": -0.125})


# ---- measuring on the fitted model ----------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_model(tmp_path_factory)


def _spec(fitted, sensitivities_file, delta=0.5, eval_rate=1.0, params=MEASURED):
    return types.SimpleNamespace(
        config=DEMO_CONFIG, overrides=fitted["overrides"] + [f"weights={fitted['weights']}"],
        weights=fitted["weights"], metric_name="VOC", pruned_params=params, delta_rate=delta,
        eval_rate=eval_rate, criterion="l1_norm", sensitivities_file=str(sensitivities_file))


@pytest.fixture(scope="module")
def setup(fitted):
    from slim.commands.sensitivity import measuring_setup
    return measuring_setup(_spec(fitted, "unused"), log=lambda message: None)


def _scope_values(setup):
    program = setup.programs.eval.program
    return {p.name: np.array(setup.scope.find_var(p.name).get_tensor())
            for p in program.global_block().all_parameters()}


def test_the_masked_evaluation_equals_the_really_pruned_program(fitted):
    from slim.commands.sensitivity import measuring_setup
    from slim.prune.pruner import keep_count
    from slim.prune.sensitivity import evaluate_masked, plan_keeps, selected_groups
    setup = measuring_setup(_spec(fitted, "unused"), log=lambda message: None)  # pruned below
    program = setup.programs.eval.program
    baseline = setup.evaluate()
    assert baseline == fitted["mAP"] == 1.0
    groups = dict(selected_groups(program, MEASURED, setup.graph))
    before = _scope_values(setup)
    # the first group whose half costs mAP (a group that costs nothing would prove little)
    for name in MEASURED:
        plan = plan_keeps(program, setup.scope, MEASURED, {name: keep_count(groups[name].size, 0.5)},
                          "l1_norm", setup.graph)
        masked = evaluate_masked(plan, setup.graph, setup.scope, setup.evaluate, setup.place)
        after = _scope_values(setup)
        assert all(np.array_equal(before[key], after[key]) for key in before)  # restored
        if masked < baseline:
            break
    assert masked < baseline, "no measured group costs mAP at ratio 0.5"
    assert len(plan.groups) == 1 and plan.groups[0].channels_after < groups[name].size
    setup.programs.apply(plan, setup.scope)
    assert setup.evaluate() == masked


def _context(setup, evaluate):
    from slim.strategies import StrategyContext
    return StrategyContext(0, setup.programs, setup.scope, log=lambda message: None,
                           executor=types.SimpleNamespace(place=setup.place), evaluate=evaluate)


def _strategy(slim_file):
    from slim.config import load_slim_config
    from slim.strategies import build_strategies
    return build_strategies(load_slim_config(slim_file), "VOC", log=lambda message: None)[0]


def _counting(setup):
    calls = []

    def evaluate(fraction=1.0):
        calls.append(fraction)
        return setup.evaluate()
    return evaluate, calls


def test_a_rerun_measures_only_what_is_missing(setup, tmp_path):
    sensitivities = tmp_path / "sens.json"
    evaluate, calls = _counting(setup)
    before = _scope_values(setup)
    strategy = _strategy(write_slim(tmp_path / "half.yaml", sensitivities, delta=0.5))
    strategy.validate(_context(setup, evaluate))
    assert len(calls) == 1 + len(MEASURED)             # baseline + one ratio (0.5) per group
    first = json.loads(sensitivities.read_text())
    assert sorted(first["groups"]) == sorted(MEASURED)
    assert all(list(entry["metric"]) == ["0.5"] for entry in first["groups"].values())
    assert first["baseline"] == 1.0 and first["identity"]["eval_rate"] == 1.0

    calls.clear()
    strategy = _strategy(write_slim(tmp_path / "quarter.yaml", sensitivities, delta=0.25))
    strategy.validate(_context(setup, evaluate))
    assert len(calls) == 1 + 2 * len(MEASURED)         # 0.25 and 0.75 are new, 0.5 is kept
    second = json.loads(sensitivities.read_text())
    for name in MEASURED:
        assert sorted(second["groups"][name]["metric"]) == ["0.25", "0.5", "0.75"]
        assert second["groups"][name]["metric"]["0.5"] == first["groups"][name]["metric"]["0.5"]
        metric = second["groups"][name]["metric"]["0.75"]
        assert second["groups"][name]["loss"]["0.75"] == pytest.approx(1.0 - metric)
    losses = [second["groups"][name]["loss"]["0.75"] for name in MEASURED]
    assert max(losses) > 0  # the fitted model detects: pruning costs mAP

    calls.clear()
    _strategy(write_slim(tmp_path / "again.yaml", sensitivities, delta=0.25)).validate(
        _context(setup, evaluate))
    assert len(calls) == 1                              # the baseline only
    after = _scope_values(setup)
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_a_file_of_another_model_or_eval_set_is_refused(setup, tmp_path):
    from slim.errors import ConfigError
    sensitivities = tmp_path / "sens.json"
    evaluate, calls = _counting(setup)
    _strategy(write_slim(tmp_path / "s.yaml", sensitivities, delta=0.5)).validate(
        _context(setup, evaluate))
    data = json.loads(sensitivities.read_text())

    data["baseline"] = 0.5                              # measured on other weights
    sensitivities.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"s.yaml: strategy 'sensitive': sensitivities file "
                                          r"'.*sens.json' was measured on a model scoring "
                                          r"0.500000, this one scores 1.000000"):
        _strategy(str(tmp_path / "s.yaml")).validate(_context(setup, evaluate))

    data["baseline"], data["identity"]["eval_rate"] = 1.0, 0.5
    sensitivities.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"another model or eval set \(eval_rate 0.5, not 1.0\)"):
        _strategy(str(tmp_path / "s.yaml")).validate(_context(setup, evaluate))

    data["identity"]["eval_rate"] = 1.0
    data["identity"]["params"]["conv1_weights"] = [1, 2, 3, 4]
    sensitivities.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"\(parameter conv1_weights \[1, 2, 3, 4\], not \[8, 3, "):
        _strategy(str(tmp_path / "s.yaml")).validate(_context(setup, evaluate))


def test_without_an_eval_set_the_file_must_be_complete(setup, tmp_path):
    from slim.errors import ConfigError
    slim_file = write_slim(tmp_path / "s.yaml", tmp_path / "none.json")
    with pytest.raises(ConfigError, match=r"sensitivities_file '.*none.json' does not exist and "
                                          r"there is no eval set here to measure them: run "
                                          r"`python -m slim sensitivity -c CONFIG -s .*s.yaml` first"):
        _strategy(slim_file).validate(_context(setup, None))


def test_on_several_cards_even_rank_0_does_not_measure(setup, tmp_path):
    """Rank 0 has an eval set, but the other ranks would wait for its measurement: on two
    cards every rank wants a complete file, before evaluating anything."""
    import dataclasses

    from slim.errors import ConfigError
    slim_file = write_slim(tmp_path / "s.yaml", tmp_path / "none.json")
    evaluations = []
    context = dataclasses.replace(_context(setup, lambda fraction=1.0: evaluations.append(1)),
                                  world_size=2)
    with pytest.raises(ConfigError, match=r"sensitivities_file '.*none.json' does not exist and "
                                          r"a run on 2 cards does not measure them \(rank 0 alone "
                                          r"has an eval set\): run `python -m slim sensitivity"):
        _strategy(slim_file).validate(context)
    assert evaluations == [] and not (tmp_path / "none.json").exists()


def test_num_steps_prune_a_share_of_the_target_at_each_step(measured, fitted, tmp_path):
    from slim.commands.sensitivity import measuring_setup
    from slim.prune.flops import program_flops
    setup = measuring_setup(_spec(fitted, "unused"), log=lambda message: None)  # pruned below
    slim_file = write_slim(tmp_path / "s.yaml", measured["file"], delta=0.25, target=0.04)
    with open(slim_file) as handle:
        text = handle.read()
    with open(slim_file, "w") as handle:
        handle.write(text.replace("    delta_rate:", "    num_steps: 2\n    delta_rate:"))
    strategy = _strategy(slim_file)
    context = _context(setup, None)  # the file is complete: nothing to measure
    base = program_flops(setup.programs.eval.program)
    strategy.validate(context)
    first, second = strategy.schedule
    assert (first["target_ratio"], second["target_ratio"]) == (0.02, 0.04)
    assert all(second["ratios"][name] >= first["ratios"][name] for name in MEASURED)
    removed = []
    for epoch in (0, 1, 2, 3):
        context.epoch = epoch
        record = strategy.on_epoch_begin(context)
        assert (record is not None) == (epoch in (1, 2))
        removed.append(1 - program_flops(setup.programs.eval.program) / base)
    assert removed[0] == 0 and removed[3] == removed[2]
    assert removed[1] == pytest.approx(0.02, abs=0.005)
    assert removed[2] == pytest.approx(0.04, abs=0.005)
    assert strategy.state_dict()["steps_done"] == 2


# ---- the command line -----------------------------------------------------------------------

def _config_args(fitted):
    return ["-c", DEMO_CONFIG, "-o", *fitted["overrides"], f"weights={fitted['weights']}"]


@pytest.fixture(scope="module")
def measured(fitted, tmp_path_factory):
    """`python -m slim sensitivity` once, one worker, delta 0.25: {root, slim, file, out, png}."""
    from slim.__main__ import main
    root = tmp_path_factory.mktemp("sensitivity_cli")
    run = {"root": root, "file": root / "sens.json", "png": root / "sens.png"}
    run["slim"] = write_slim(root / "s.yaml", run["file"], delta=0.25, target=0.03,
                             checkpoint=root / "ckpt")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sensitivity", *_config_args(fitted), "-s", run["slim"],
                     "--png", str(run["png"])]) == 0
    run["out"] = out.getvalue()
    return run


def test_the_sensitivity_command_writes_the_file_a_table_and_a_chart(measured):
    data = json.loads(measured["file"].read_text())
    assert sorted(data["groups"]) == sorted(MEASURED)
    assert all(sorted(entry["metric"]) == ["0.25", "0.5", "0.75"]
               for entry in data["groups"].values())
    assert "3 groups x 3 ratios, baseline VOC mAP 100.00 on 100% of the eval set: 9 to measure" \
        in measured["out"]
    for name in MEASURED:
        losses = data["groups"][name]["loss"]
        row = f"{name}  " + " ".join(f"{100 * losses[key]:6.2f}" for key in ("0.25", "0.5", "0.75"))
        assert row in measured["out"], measured["out"]
    assert measured["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_workers_measure_what_one_measures(measured, fitted, tmp_path, capsys):
    from slim.__main__ import main
    sensitivities = tmp_path / "sens.json"
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, delta=0.25)
    assert main(["sensitivity", *_config_args(fitted), "-s", slim_file, "--workers", "2"]) == 0
    assert "9 to measure" in capsys.readouterr().out
    mine = json.loads(sensitivities.read_text())["groups"]
    theirs = json.loads(measured["file"].read_text())["groups"]
    assert {name: entry["metric"] for name, entry in mine.items()} == \
        {name: entry["metric"] for name, entry in theirs.items()}


def test_sensitivity_command_errors_are_one_line(measured, fitted, tmp_path, capsys):
    from slim.__main__ import main
    code, error = _exit_code_and_error(capsys, main, ["sensitivity", *_config_args(fitted), "-s",
                                                 measured["slim"], "--workers", "0"])
    assert code == 2 and error == "error: --workers must be >= 1, got 0"
    uniform = tmp_path / "uniform.yaml"
    uniform.write_text(open(measured["slim"]).read().replace("SensitivePruneStrategy",
                                                             "UniformPruneStrategy")
                       .replace("    delta_rate: 0.25\n", "")
                       .replace(f"    sensitivities_file: {measured['file']}\n", ""))
    code, error = _exit_code_and_error(capsys, main, ["sensitivity", *_config_args(fitted),
                                                 "-s", str(uniform)])
    assert code == 2 and re.fullmatch(r"error: .*uniform.yaml: no strategy of class "
                                      r"SensitivePruneStrategy; add one .*", error), error
    (tmp_path / "user.png").write_text("the user's file")
    code, error = _exit_code_and_error(capsys, main, ["sensitivity", *_config_args(fitted), "-s",
                                                 measured["slim"], "--png",
                                                 str(tmp_path / "user.png")])
    assert code == 2 and "--png: " in error and "was not written by this tool" in error
    assert (tmp_path / "user.png").read_text() == "the user's file"


def test_inspect_plans_the_strategy_from_the_file_or_asks_for_it(measured, fitted, tmp_path,
                                                                 capsys):
    from slim.__main__ import main
    assert main(["inspect", *_config_args(fitted), "-s", measured["slim"], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["strategies"][0]["name"] == "sensitive"
    assert 1 - summary["flops_after"] / summary["flops_before"] == pytest.approx(0.03, abs=0.005)
    assert summary["groups"] and all(len(set(group["params"]) & set(MEASURED)) == 1
                                     for group in summary["groups"])
    missing = write_slim(tmp_path / "missing.yaml", tmp_path / "none.json", delta=0.25)
    code, error = _exit_code_and_error(capsys, main, ["inspect", *_config_args(fitted), "-s", missing])
    assert code == 2 and "none.json' does not exist" in error
    assert "run `python -m slim sensitivity -c CONFIG -s" in error


def test_inspect_plans_every_step_of_num_steps(measured, fitted, tmp_path, capsys):
    from slim.__main__ import main
    slim_file = write_slim(tmp_path / "s.yaml", measured["file"], delta=0.25, target=0.04)
    with open(slim_file) as handle:
        text = handle.read()
    with open(slim_file, "w") as handle:
        handle.write(text.replace("    delta_rate:", "    num_steps: 2\n    delta_rate:"))
    assert main(["inspect", *_config_args(fitted), "-s", slim_file, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [step["name"] for step in summary["strategies"]] == ["sensitive", "sensitive"]
    assert 1 - summary["flops_after"] / summary["flops_before"] == pytest.approx(0.04, abs=0.005)


# ---- compress.py with the strategy ---------------------------------------------------------

def _compress(fitted, slim_file, root):
    compress_cli.main(["-s", slim_file, *_config_args(fitted), *FITTED_RUN_OPTIONS,
                       f"save_dir={root / 'output'}"])


def test_compress_prunes_by_per_group_ratios_and_resumes_without_pruning_again(
        measured, fitted, tmp_path, capsys):
    from slim.io import checkpoint as ck
    from slim.prune.pruner import keep_count
    sensitivities = tmp_path / "sens.json"
    sensitivities.write_bytes(measured["file"].read_bytes())
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, delta=0.25, target=0.03,
                           checkpoint=tmp_path / "ckpt")
    _compress(fitted, slim_file, tmp_path)
    output = capsys.readouterr().out
    assert "measuring" not in output                    # the file has every entry
    first = ck.validate_checkpoint(str(tmp_path / "ckpt" / "1"))
    [record] = first.state.pruning_plans
    assert (record["strategy"], record["epoch"]) == ("sensitive", 1)
    state = first.state.extra["hooks"]["sensitive"]
    assert state["steps_done"] == 1
    [step] = state["schedule"]
    kept = {group["key"][0]: (group["channels_after"], group["channels_before"])
            for group in record["plan"]["groups"]}
    assert kept == {name: (step["keeps"][name], before) for name, (_, before) in kept.items()
                    if step["keeps"][name] < before}
    assert {name: keep_count(kept[name][1], step["ratios"][name]) for name in kept} == \
        {name: after for name, (after, _) in kept.items()}
    assert len({round(ratio, 6) for ratio in step["ratios"].values()}) > 1  # not uniform
    flops = first.state.extra
    assert 1 - flops["flops"] / flops["flops_unpruned"] == pytest.approx(0.03, abs=0.005)
    assert re.search(r"^strategy 'sensitive' at epoch 1: step 1/1 pruned \d+ groups by their "
                     r"sensitivities", output, re.M), output

    with open(slim_file) as handle:
        text = handle.read()
    with open(slim_file, "w") as handle:
        handle.write(text.replace("  epoch: 2\n", "  epoch: 3\n"))
    os.remove(sensitivities)  # a resumed run neither reads nor measures it
    _compress(fitted, slim_file, tmp_path)
    output = capsys.readouterr().out
    assert re.search(r"^resumed from checkpoint '.*1': epoch 1 done", output, re.M), output
    assert "strategy 'sensitive'" not in output
    final = ck.validate_checkpoint(str(tmp_path / "ckpt" / "2"))
    assert final.state.pruning_plans == first.state.pruning_plans
    assert final.state.extra["flops"] == flops["flops"]


def test_compress_with_an_unreadable_sensitivities_file_is_one_line(fitted, tmp_path, capsys):
    sensitivities = tmp_path / "sens.data"
    sensitivities.write_bytes(b"\x80\x04 a PaddleSlim 1.x pickle")
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, checkpoint=tmp_path / "ckpt")
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                  ["-s", slim_file, *_config_args(fitted), *FITTED_RUN_OPTIONS,
                                   f"save_dir={tmp_path / 'output'}"])
    assert code == 2 and re.fullmatch(r"error: .*s.yaml: strategy 'sensitive': sensitivities "
                                      r"file '.*sens.data' cannot be read as JSON .*", error), error
    assert not os.path.exists(tmp_path / "ckpt" / "0")


# ---- hostile sensitivities files (rule (c): every number checked where it is parsed) ---------

GOOD_FILE = {"format": "slim-sensitivities", "version": 1,
             "identity": {"params": {"w": [4, 3, 1, 1]}, "eval_rate": 0.5, "criterion": "l1_norm"},
             "baseline": 0.8,
             "groups": {"w": {"params": ["w"], "channels": 4, "metric": {"0.5": 0.6}}}}

HOSTILE_FILES = {
    # case: (the JSON text's change, the key the message must name, the valid range it states)
    "NaN baseline": (('"baseline": 0.8', '"baseline": NaN'), "baseline", "in [0, 1]"),
    "infinite baseline": (('"baseline": 0.8', '"baseline": -Infinity'), "baseline", "in [0, 1]"),
    "baseline a string": (('"baseline": 0.8', '"baseline": "0.8"'), "baseline", "finite number"),
    "baseline true": (('"baseline": 0.8', '"baseline": true'), "baseline", "finite number"),
    "baseline above 1": (('"baseline": 0.8', '"baseline": 80'), "baseline", "in [0, 1]"),
    "baseline missing with groups": (('"baseline": 0.8', '"baseline": null'), "baseline",
                                     "in [0, 1]"),
    "NaN metric": (('"0.5": 0.6', '"0.5": NaN'), "groups.w.metric.0.5", "in [0, 1]"),
    "infinite metric": (('"0.5": 0.6', '"0.5": 1e999'), "groups.w.metric.0.5", "in [0, 1]"),
    "metric a string": (('"0.5": 0.6', '"0.5": "high"'), "groups.w.metric.0.5", "finite number"),
    "negative metric": (('"0.5": 0.6', '"0.5": -0.1'), "groups.w.metric.0.5", "in [0, 1]"),
    "ratio key not a number": (('"0.5": 0.6', '"half": 0.6'), "groups.w.metric", "(0, 1)"),
    "ratio key 1.5": (('"0.5": 0.6', '"1.5": 0.6'), "groups.w.metric", "(0, 1)"),
    "ratio key nan": (('"0.5": 0.6', '"nan": 0.6'), "groups.w.metric", "(0, 1)"),
    "metric a list": (('{"0.5": 0.6}', '[0.6]'), "groups.w.metric", "a mapping"),
    "params a string": (('"params": ["w"]', '"params": "w"'), "groups.w.params", "a list"),
    "channels a string": (('"channels": 4', '"channels": "4"'), "groups.w.channels", "positive"),
    "channels 0": (('"channels": 4', '"channels": 0'), "groups.w.channels", "positive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_hostile_sensitivities_file_is_refused_naming_file_key_and_range(tmp_path, case):
    """Each bad value is one SensitivityFileError naming the file, the key and what is
    valid (a NaN metric printed a table of nan and pruned by it; a string baseline or
    ratio key was a traceback)."""
    from slim.strategies.sensitive_prune import SensitivityFile, SensitivityFileError
    (old, new), key, valid = HOSTILE_FILES[case]
    text = json.dumps(GOOD_FILE)
    assert old in text
    path = tmp_path / "sens.json"
    path.write_text(text.replace(old, new))
    with pytest.raises(SensitivityFileError) as raised:
        SensitivityFile.open(str(path), GOOD_FILE["identity"])
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert f": {key} must be" in message and valid in message, message


def test_a_good_sensitivities_file_still_loads(tmp_path):
    """The checks refuse only what is wrong: the good file, a file without groups and
    baseline (started, nothing measured) and a ratio key written as '0.50'."""
    from slim.strategies.sensitive_prune import SensitivityFile
    path = tmp_path / "sens.json"
    path.write_text(json.dumps(GOOD_FILE).replace('"0.5": 0.6', '"0.50": 0.6, "0.25": 1'))
    store = SensitivityFile.open(str(path), GOOD_FILE["identity"])
    assert store.baseline == 0.8 and store.groups["w"]["metric"] == {"0.5": 0.6, "0.25": 1.0}
    path.write_text(json.dumps(dict(GOOD_FILE, baseline=None, groups={})))
    assert SensitivityFile.open(str(path), GOOD_FILE["identity"]).baseline is None


@pytest.mark.parametrize("entry", ["sensitivity", "compress"])
def test_a_nan_in_the_sensitivities_file_is_one_line_from_the_commands(measured, fitted, tmp_path,
                                                                      capsys, entry):
    """`slim sensitivity` (which printed a table of nan) and compress.py (which pruned by
    it) both refuse a file whose metric is NaN, exit 2, nothing trained."""
    from slim.__main__ import main
    sensitivities = tmp_path / "sens.json"
    data = json.loads(measured["file"].read_text())
    data["groups"][MEASURED[1]]["metric"]["0.5"] = float("nan")
    sensitivities.write_text(json.dumps(data))
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, delta=0.25, target=0.03,
                           checkpoint=tmp_path / "ckpt")
    if entry == "sensitivity":
        code, error = _exit_code_and_error(capsys, main, ["sensitivity", *_config_args(fitted),
                                                          "-s", slim_file])
    else:
        code, error = _exit_code_and_error(capsys, compress_cli.main,
                                           ["-s", slim_file, *_config_args(fitted),
                                            *FITTED_RUN_OPTIONS, f"save_dir={tmp_path / 'out'}"])
    assert code == 2 and f"groups.{MEASURED[1]}.metric.0.5 must be a finite number in [0, 1]" \
        in error and "got value NaN" in error, error
    assert not os.path.exists(tmp_path / "ckpt" / "0")


# ---- rule (e): the sensitivities file is claimed like checkpoint_path ------------------------

def test_a_second_sensitivity_run_on_one_file_fails_at_once(measured, fitted, tmp_path, capsys,
                                                          monkeypatch):
    """While another process holds the sensitivities file (a first run measuring), a second
    `slim sensitivity` on it is one line naming sensitivities_file, before it builds or
    measures anything (it used to measure everything, then fail claiming the file 'was not
    written by this tool' and naming the directory as the option). The lock file of a
    killed holder is taken over; a finished run leaves no lock file."""
    import subprocess
    import sys

    from test_compress import ROOT, child_env

    import slim.commands.sensitivity as sensitivity_command
    from slim.__main__ import main
    sensitivities = tmp_path / "sens.json"
    sensitivities.write_bytes(measured["file"].read_bytes())
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, delta=0.25)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom slim.io.output_places import lock_file\n"
         "held = lock_file(sys.argv[1], 'sensitivities_file')\nprint('locked', flush=True)\n"
         "time.sleep(120)", str(sensitivities)],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with monkeypatch.context() as patched:
            patched.setattr(sensitivity_command, "measuring_setup",
                            lambda *a, **k: pytest.fail("built the model before the lock"))
            code, error = _exit_code_and_error(capsys, main, ["sensitivity", *_config_args(fitted),
                                                              "-s", slim_file])
        assert code == 2 and error.startswith(f"error: sensitivities_file '{sensitivities}' is in "
                                              "use by another run"), error
        assert sensitivities.read_bytes() == measured["file"].read_bytes()
    finally:
        holder.kill()
        holder.wait()
    lock = tmp_path / ".sens.json.lock"
    assert lock.exists()  # left by the killed holder: not locked any more
    assert main(["sensitivity", *_config_args(fitted), "-s", slim_file]) == 0
    assert "0 to measure" in capsys.readouterr().out
    assert not lock.exists()


# ---- Ctrl-C during slim sensitivity, 20 times ------------------------------------------------

INTERRUPT_TRIES = 20


@pytest.mark.slow
def test_ctrl_c_during_slim_sensitivity_20_times(fitted, tmp_path):
    """#20 cause 8: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) at a
    random moment of `slim sensitivity`, 20 times, with one and with two worker processes:
    every run ends with the one line 'interrupted' and exit code 130, never a native abort
    ('terminate called without an active exception', exit 134) or a traceback, and the
    sensitivities file is absent or whole JSON (it is written atomically after every entry).
    Each try waits for the measuring to start (its 'N to measure' line), then 0 to 3 s."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from test_compress import ROOT, child_env
    sensitivities = tmp_path / "sens.json"
    slim_file = write_slim(tmp_path / "s.yaml", sensitivities, delta=0.1, params="auto")
    rng = random.Random(20)
    outcomes = []
    for attempt in range(INTERRUPT_TRIES):
        if sensitivities.exists():
            sensitivities.unlink()
        workers = ["--workers", "2"] if attempt % 4 == 3 else []
        log = tmp_path / f"stderr_{attempt}.txt"
        with open(log, "w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "slim", "sensitivity", *_config_args(fitted), "-s",
                 slim_file, *workers], cwd=ROOT, env=child_env(PYTHONUNBUFFERED="1"),
                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored
            for line in process.stdout:  # "... N to measure into ...": the measuring starts
                if "to measure" in line:
                    break
            time.sleep(rng.uniform(0.0, 3.0))
            os.killpg(process.pid, signal.SIGINT)
            process.communicate(timeout=120)
        stderr = log.read_text()
        outcomes.append((process.returncode, stderr.strip().splitlines()[-1:]))
        assert "terminate called" not in stderr and "Traceback" not in stderr, stderr[-3000:]
        assert process.returncode == 130 and stderr.rstrip().endswith("interrupted"), outcomes
        if sensitivities.exists():
            json.loads(sensitivities.read_text())
    assert len(outcomes) == INTERRUPT_TRIES
