"""The pure helpers of bench/accuracy.py: cache key, schedule, convergence, table, ETA."""
import dataclasses
import os

import pytest
from bench_modules import load_bench

from slim.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




bench = load_bench("accuracy")


def test_the_cache_key_changes_with_each_input_and_only_with_them():
    recipe = bench.FULL
    key = bench.baseline_key("config text", recipe, ["a=1"], "3.3.1")
    assert key == bench.baseline_key("config text", recipe, ["a=1"], "3.3.1")
    changed = [
        bench.baseline_key("config text!", recipe, ["a=1"], "3.3.1"),
        bench.baseline_key("config text", recipe, ["a=2"], "3.3.1"),
        bench.baseline_key("config text", recipe, ["a=1"], "2.6.2"),
        bench.baseline_key("config text", bench.dataclasses.replace(recipe, test_images=7),
                           ["a=1"], "3.3.1"),
        bench.baseline_key("config text", bench.dataclasses.replace(recipe, pretrain_epochs=9),
                           ["a=1"], "3.3.1"),
        bench.baseline_key("config text", bench.dataclasses.replace(
            recipe, decay_fractions=(0.5, 0.8)), ["a=1"], "3.3.1"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    # the fine-tuning runs are not cached: their settings leave the baseline's key alone
    unchanged = [bench.dataclasses.replace(recipe, finetune_epochs=9),
                 bench.dataclasses.replace(recipe, seeds=(5,)),
                 bench.dataclasses.replace(recipe, seconds_per_iteration=9.0)]
    assert {bench.baseline_key("config text", r, ["a=1"], "3.3.1") for r in unchanged} == {key}


def test_the_schedule_decays_at_its_fractions_after_a_bounded_warm_up():
    assert bench.schedule_override(3000, (0.6, 0.8), 50) == (
        "LearningRate.schedulers=[!PiecewiseDecay {gamma: 0.1, milestones: [1800, 2400]}, "
        "!LinearWarmup {start_factor: 0., steps: 50}]")
    assert "steps: 10}" in bench.schedule_override(10, (0.6, 0.8), 50)


def test_the_curve_and_the_last_fifth_gain():
    summary = {"history": [{"epoch": e, "mAP": m} for e, m in
                           enumerate([0.1, 0.3, 0.4, 0.45, 0.452])]}
    curve = bench.map_curve(summary, 200)
    assert curve == [(200, 10.0), (400, 30.0), (600, 40.0), (800, 45.0), (1000, 45.2)]
    assert bench.last_fifth_gain(curve) == pytest.approx(0.2)  # 45.2 at 1000 - 45.0 at 800
    assert bench.last_fifth_gain(curve[:1]) is None
    # the last evaluation at or before 80% counts (700 here), not the first after it
    assert bench.last_fifth_gain([(300, 10.0), (700, 20.0), (1000, 21.0)]) == pytest.approx(1.0)


def test_rows_give_the_mean_spread_and_drop_against_the_control():
    baseline = {"map": 50.0, "flops": 200, "params": 1000, "size_mb": 4.0}
    def run(value, flops):
        return {"map": value, "flops": flops, "params": flops * 5, "size_mb": flops / 50}
    runs = {"control": [run(52.0, 200), run(51.0, 200)], "seed": [run(49.0, 100), run(48.0, 100)]}
    rows = bench.method_rows(runs, baseline)
    assert [row["method"] for row in rows] == ["baseline", "control", "seed"]
    assert rows[1]["map"] == 51.5 and rows[1]["map_spread"] == 1.0 and rows[1]["drop"] == 0.0
    assert rows[2]["map"] == 48.5 and rows[2]["drop"] == 3.0 and rows[2]["map_per_seed"] == [49.0, 48.0]
    lines = bench.results_table(rows)
    assert lines[2] == "| baseline | 100.0% (0.0 M) | 0.001 M | 4.00 MB | 50.00 |  |  |"
    assert lines[4] == "| seed | 50.0% (0.0 M) | 0.001 M | 2.00 MB | 48.50 | 1.00 (2 seeds) | +3.00 |"


def test_the_eta_scales_the_remaining_work_by_the_measured_pace():
    assert bench.eta_seconds(0.0, 0.0, 100.0, prior=10.0) == 100.0
    assert bench.eta_seconds(50.0, 110.0, 30.0, prior=10.0) == 60.0  # 2x slower than expected
    assert bench.eta_seconds(1.0, 0.1, 30.0, prior=10.0) == pytest.approx(30.0 * 10.1 / 11.0)


def test_methods_are_chosen_by_name_and_an_unknown_one_is_one_line():
    assert list(bench.selected_methods("auto, seed")) == ["auto", "seed"]
    with pytest.raises(UserError, match="unknown method.*nope.*valid: seed, auto"):
        bench.selected_methods("seed,nope")


def test_every_method_names_a_slim_config_that_exists():
    for method in bench.METHODS.values():
        assert os.path.isfile(os.path.join(ROOT, method.slim_config))


def test_a_directory_the_bench_did_not_make_is_never_emptied(tmp_path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not made by bench/accuracy.py"):
        bench.fresh_dir(str(foreign))
    assert (foreign / "keep.txt").read_text() == "x"
    ours = bench.fresh_dir(str(tmp_path / "ours"))
    (tmp_path / "ours" / "old.txt").write_text("x")
    bench.fresh_dir(ours)
    assert sorted(os.listdir(ours)) == [bench.BENCH_MARKER]


def test_the_baseline_record_reads_the_curve_and_the_model_of_a_train_run(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "3"
    (checkpoint / "eval_model").mkdir(parents=True)
    (checkpoint / "eval_model" / "__params__").write_bytes(b"x" * 2 ** 19)
    summary = {"history": [{"epoch": e, "mAP": m} for e, m in enumerate([0.2, 0.4, 0.5, 0.505])],
               "flops_after": 123, "params_after": 45, "last_checkpoint": str(checkpoint)}
    bench.write_json(str(tmp_path / "eval" / "train_summary.json"), summary)
    record = bench.baseline_record(str(tmp_path / "eval"), str(tmp_path / "checkpoints"), 100, 7.0)
    assert record["curve"][0] == {"iteration": 100, "map": 20.0}
    assert record["map"] == 50.5 and record["last_fifth_gain"] == pytest.approx(0.5)
    assert record["converged"] is True
    assert (record["flops"], record["params"], record["size_mb"]) == (123, 45, 0.5)
    assert record["model_final"] == str(tmp_path / "checkpoints" / "model_final")
    summary["history"][-1]["mAP"] = 0.52  # 2 points over the last fifth: not converged
    bench.write_json(str(tmp_path / "eval" / "train_summary.json"), summary)
    assert bench.baseline_record(str(tmp_path / "eval"), str(tmp_path / "checkpoints"), 100,
                                 7.0)["converged"] is False


def test_a_finished_run_is_reused_only_with_the_same_slim_config_and_command(tmp_path):
    session = bench.Bench(bench.QUICK, str(tmp_path), {}, ["a=1"], None, str(tmp_path / "cache"))
    run_dir, config, command, key = bench.finetune_plan(
        session, "sensitive", bench.METHODS["sensitive"].slim_config, 0, "model_final")
    # the sensitivities file is the baseline's, shared by the seeds
    (strategy,) = config["strategies"].values()
    assert strategy["sensitivities_file"] == str(tmp_path / "cache" / "sensitivities.json")
    assert bench.finished_run(run_dir, key) is None  # never run
    os.makedirs(run_dir)
    bench.write_json(os.path.join(run_dir, bench.RUN_RESULT), {"key": key, "result": {"map": 50.0}})
    assert bench.finished_run(run_dir, key) == {"map": 50.0}
    _, _, _, other_seed = bench.finetune_plan(
        session, "sensitive", bench.METHODS["sensitive"].slim_config, 1, "model_final")
    _, _, _, other_model = bench.finetune_plan(
        session, "sensitive", bench.METHODS["sensitive"].slim_config, 0, "other_final")
    assert bench.finished_run(run_dir, other_seed) is None
    assert bench.finished_run(run_dir, other_model) is None


def test_the_long_recipe_shares_the_baseline_and_keeps_its_runs_and_table_apart():
    key = bench.baseline_key("config text", bench.FULL, ["a=1"], "3.3.1")
    assert bench.baseline_key("config text", bench.LONG, ["a=1"], "3.3.1") == key
    assert bench.LONG.finetune_iterations == 2 * bench.FULL.finetune_iterations
    assert (bench.FULL.runs_dir, bench.LONG.runs_dir) == ("runs", "runs_long")
    assert bench.FULL.results_json == os.path.join("bench", "results", "accuracy.json")
    assert bench.LONG.results_json == os.path.join("bench", "results", "accuracy_long.json")
    assert bench.QUICK.results_json is None


def test_sensitivities_are_measured_once_before_the_runs_into_the_cache(tmp_path):
    steps = []
    session = bench.Bench(bench.QUICK, str(tmp_path), {}, ["a=1"], None, str(tmp_path / "cache"))
    session.step = lambda name, command, log: steps.append((name, command))
    os.makedirs(session.cache_dir)
    methods = bench.selected_methods("seed,sensitive")
    bench.measure_sensitivities(session, methods, "model_final", 2)
    (name, command), = steps  # the seed recipe reads no sensitivities
    assert name == bench.sensitivity_step("sensitive")
    assert command[1:4] == ["-m", "slim", "sensitivity"]
    assert command[command.index("--workers") + 1] == "2"
    assert "weights=model_final" in command and "a=1" in command
    slim_path = command[command.index("-s") + 1]
    (strategy,) = bench.yaml.safe_load(open(slim_path))["strategies"].values()
    # the same file the fine-tuning runs read
    assert strategy["sensitivities_file"] == bench.sensitivities_path(session)


def test_runs_at_a_time_come_back_in_plan_order_and_a_failure_is_raised(monkeypatch):
    import threading
    import time
    finish_order = []
    running, most = [0], [0]
    lock = threading.Lock()

    def fake_finetune(session, method, slim_config, seed, model_final):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05 if (method, seed) == ("control", 0) else 0.01)
        with lock:
            running[0] -= 1
            finish_order.append((method, seed))
        if method == "broken":
            raise UserError("step failed")
        return {"map": seed}

    monkeypatch.setattr(bench, "finetune", fake_finetune)
    plan = [(method, None, seed) for method in ("control", "seed") for seed in (0, 1)]
    partial = []
    runs = bench.finetune_all(None, plan, "final", 2, partial.append)
    assert runs == {"control": [{"map": 0}, {"map": 1}], "seed": [{"map": 0}, {"map": 1}]}
    assert most[0] == 2 and finish_order[0] != ("control", 0)  # it ran beside the others
    assert len(partial) == 4 and partial[-1] == runs
    with pytest.raises(UserError, match="step failed"):
        bench.finetune_all(None, [("broken", None, 0), *plan], "final", 1)


def test_a_control_taught_method_reads_the_control_of_its_seed_and_reruns_with_it(tmp_path):
    session = bench.Bench(bench.LONG, str(tmp_path), {}, ["a=1"], None, str(tmp_path / "cache"))
    name = "sensitive_distill_control"
    run_dir, config, _, key = bench.finetune_plan(
        session, name, bench.METHODS[name].slim_config, 1, "model_final")
    (teacher,) = bench.distillation_entries(config).values()
    control_dir, _, _, control_key = bench.finetune_plan(session, "control", None, 1, "model_final")
    assert control_dir == str(tmp_path / "runs_long" / "control_seed1")
    assert teacher["teacher_weights"] == os.path.join(control_dir, "checkpoints", "5",
                                                      "eval_model", "__params__")
    # the plain distillation method keeps the model at pruning time as its teacher
    _, plain, _, _ = bench.finetune_plan(session, "sensitive_distill",
                                         bench.METHODS["sensitive_distill"].slim_config, 1,
                                         "model_final")
    assert bench.distillation_entries(plain)["distillation_strategy"]["teacher_weights"] is None
    # what makes the control anew makes the run anew
    for change in ({"warmup_steps": 7}, {"finetune_epochs": 2}):
        other = bench.Bench(dataclasses.replace(bench.LONG, **change), str(tmp_path), {}, ["a=1"],
                            None, str(tmp_path / "cache"))
        assert bench.finetune_plan(other, "control", None, 1, "model_final")[3] != control_key
        assert bench.finetune_plan(other, name, bench.METHODS[name].slim_config, 1,
                                   "model_final")[3] != key
    assert bench.finetune_plan(session, name, bench.METHODS[name].slim_config, 1,
                               "other_final")[3] != key
    assert bench.needs_control(name) and not bench.needs_control("sensitive_distill")
    # a method's distillation weight replaces its slim config's
    assert teacher["distillation_loss_weight"] == 1.0
    _, weighted, _, weighted_key = bench.finetune_plan(
        session, f"{name}_w3", bench.METHODS[f"{name}_w3"].slim_config, 1, "model_final")
    (strategy,) = bench.distillation_entries(weighted).values()
    assert strategy["distillation_loss_weight"] == 3.0 and weighted_key != key
    _, stepped, _, _ = bench.finetune_plan(session, "sensitive2_distill_control",
                                           bench.METHODS[name].slim_config, 1, "model_final")
    assert stepped["strategies"]["sensitive_pruning_strategy"]["num_steps"] == 2
    assert config["strategies"]["sensitive_pruning_strategy"]["num_steps"] == 1


def test_a_control_taught_run_starts_only_after_the_control_of_its_seed(monkeypatch):
    import threading
    import time
    events = []
    lock = threading.Lock()
    name = "sensitive_distill_control"

    def fake_finetune(session, method, slim_config, seed, model_final):
        with lock:
            events.append(("start", method, seed))
        time.sleep(0.1 if method == "control" else 0.01)
        with lock:
            events.append(("end", method, seed))
        return {"map": seed}

    monkeypatch.setattr(bench, "finetune", fake_finetune)
    # listed before its control, on one worker and on two: it still waits, and the
    # results keep the plan's order
    plan = [(name, None, 0), ("control", None, 0), ("seed", None, 0)]
    for jobs in (1, 2):
        events.clear()
        runs = bench.finetune_all(None, plan, "final", jobs)
        assert events.index(("start", name, 0)) > events.index(("end", "control", 0))
        assert list(runs) == [name, "control", "seed"]


def test_an_interrupted_bench_stops_its_running_steps_and_starts_no_more(monkeypatch, tmp_path):
    import signal
    import sys
    import time
    session = bench.Bench(bench.QUICK, str(tmp_path), {}, [], None)
    started = []

    def fake_finetune(_, method, slim_config, seed, model_final):
        started.append(method)
        if method == "a":  # Ctrl-C (here SIGUSR1 raising KeyboardInterrupt) while both run
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGUSR1)
        with open(tmp_path / f"{method}.log", "w") as log:
            code = session.processes.run([sys.executable, "-c", "import time; time.sleep(60)"],
                                         log, None)
        raise UserError(f"{method} exited {code}")

    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "finetune", fake_finetune)
    previous = signal.signal(signal.SIGUSR1, interrupt)
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.finetune_all(session, [("a", None, 0), ("b", None, 0), ("c", None, 0)],
                               "final", 2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert time.monotonic() - began < 30  # the 60 s steps were terminated, not waited for
    assert sorted(started) == ["a", "b"]  # c never started
    with pytest.raises(UserError, match="stopped"):
        session.processes.run([sys.executable, "-c", "pass"], None, None)
