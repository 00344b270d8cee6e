"""Hostile config input (issue 9): control characters, deep nesting, dates and huge numbers,
alias bombs, huge values to echo, unreadable files. Each is one ConfigError naming the file
(and line) or the `-o` item, cut to about 200 characters, found by the loader itself rather
than by Python's recursion, memory or integer limits; every CLI prints it as one line, exit 2."""
import os
import time
import tracemalloc

import pytest
from test_cli_errors import _exit_code_and_error

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
from slim import __main__ as slim_cli
from slim.commands import pretrain
from slim.config import cli as config_cli
from slim.config import load_config, load_slim_config, yaml_io
from slim.config.yaml_io import MAX_EXPANDED_CHARACTERS, MAX_EXPANDED_VALUES, MAX_NESTING, parse_yaml
from slim.errors import ConfigError, shorten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTION = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml")
SLIM = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo_slim.yaml")
DET_OVERRIDES = ["weights=null"]  # the audit's DET: the demo config without its weights
MESSAGE_BOUND = 1000  # an error echoing user values (each cut to about 200) and valid keys


def write(directory, name, content):
    """Write text (UTF-8) or bytes to directory/name; return the path."""
    path = os.path.join(str(directory), name)
    with open(path, "wb") as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def config_error(load, *args):
    """The message of the ConfigError that `load(*args)` raises."""
    with pytest.raises(ConfigError) as info:
        load(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) < MESSAGE_BOUND, message
    return message


def alias_bomb():
    """Under 1 KB: ten levels of anchors, each a list of ten aliases of the one before
    (10**10 values when expanded), all inside max_iters."""
    lines = ["architecture: YOLOv3", "max_iters:",
             "  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 1024
    return text


# --- 9: control characters and NUL bytes ---

@pytest.mark.parametrize("character, kind", [
    ("\x00", "a NUL byte (U+0000)"), ("\x01", "a control character (U+0001)"),
    ("\x1b", "a control character (U+001B)"), ("\x7f", "a control character (U+007F)")])
def test_control_character_in_a_file_names_file_line_and_column(tmp_path, character, kind):
    path = write(tmp_path, "det.yml", f"architecture: YOLOv3\nsave_dir: out{character}put\n")
    assert config_error(load_config, path) == (
        f"{path}:2: {kind} at column 14 is not allowed in YAML; remove it")


def test_control_character_in_a_slim_config(tmp_path):
    path = write(tmp_path, "slim.yaml", "version: 1.0\n\x00compressor: {epoch: 1}\n")
    assert config_error(load_slim_config, path).startswith(f"{path}:2: a NUL byte (U+0000)")


@pytest.mark.parametrize("value, kind", [("a\x00b", "a NUL byte (U+0000)"),
                                         ("a\x01b", "a control character (U+0001)"),
                                         ("a\udcffb", "an undecodable byte (not UTF-8) (U+DCFF)")])
def test_control_character_in_an_override_names_the_item(value, kind):
    message = config_error(load_config, DETECTION, DET_OVERRIDES + [f"save_dir={value}"])
    assert message == (f"-o save_dir={shorten(value)}: {kind} at column 2 is not allowed in "
                       f"YAML; remove it")


# --- 10: nesting ---

def test_nesting_past_the_limit_is_refused_by_the_loader_not_by_recursion(tmp_path):
    text = "architecture: YOLOv3\nmax_iters: " + "[" * 500 + "]" * 500 + "\n"
    assert len(text) < 1100
    path = write(tmp_path, "deep.yml", text)
    assert config_error(load_config, path) == (
        f"{path}:2: nested more than {MAX_NESTING} levels deep (brackets or indentation); "
        f"a config needs a few levels")


def test_nesting_up_to_the_limit_reaches_validation(tmp_path):
    # The top-level mapping is one level: MAX_NESTING - 1 brackets fit, one more does not.
    fits = "architecture: YOLOv3\nmax_iters: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1)
    assert "key 'max_iters' must be int or one of 'auto', got [[[" in config_error(
        load_config, write(tmp_path, "fits.yml", fits))
    deeper = fits.replace("[", "[[", 1).replace("]", "]]", 1)
    assert "nested more than" in config_error(load_config, write(tmp_path, "deeper.yml", deeper))


def test_alias_chain_nesting_past_the_limit_names_the_alias(tmp_path):
    lines = ["architecture: YOLOv3", "max_iters:", "  - &a0 [1]"]
    lines += [f"  - &a{i} [*a{i - 1}]" for i in range(1, 200)]
    path = write(tmp_path, "chain.yml", "\n".join(lines))
    # max_iters' list is level 2, its item &a47 = [*a46] level 3, and *a46 holds 47 more.
    assert config_error(load_config, path) == (
        f"{path}:50: alias '*a46' nests values more than {MAX_NESTING} levels deep; a config "
        f"needs a few levels")


def test_override_key_with_too_many_dotted_parts_names_the_item():
    key = "YOLOv3" + ".a" * 3000
    message = config_error(load_config, DETECTION, DET_OVERRIDES + [key + "=1"])
    assert message == (f"-o {key[:100]}... (400+ characters): the key has 3001 dotted parts; "
                       f"at most {MAX_NESTING} (a config needs a few levels)")


def test_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, "loop.yml", "architecture: YOLOv3\nmax_iters: &loop [1, *loop]\n")
    assert config_error(load_config, path) == (
        f"{path}:2: alias '*loop' is inside the value its anchor names (a recursive "
        f"structure); a config value cannot contain itself")


# --- 11: dates stay strings; huge integers; value errors of PyYAML constructors ---

@pytest.mark.parametrize("value", ["2001-13-45", "2001-12-14", "2001-12-14 21:59:43.10 -5"])
def test_date_like_values_stay_strings(value):
    assert load_config(DETECTION, DET_OVERRIDES + [f"save_dir={value}"]).save_dir == value
    assert parse_yaml(f"when: {value}", "t.yml") == {"when": value}


def test_explicit_timestamp_tag_is_refused():
    message = config_error(load_config, DETECTION, DET_OVERRIDES + ["save_dir=!!timestamp 2001-13-45"])
    assert message.startswith("-o save_dir=!!timestamp 2001-13-45: YAML tag '!!timestamp' is not "
                              "allowed (safe YAML only)")


def test_integer_of_5000_digits_is_refused_without_echoing_it():
    digits = "9" * 5000
    message = config_error(load_config, DETECTION, DET_OVERRIDES + [f"max_iters={digits}"])
    assert message.startswith(f"-o max_iters={'9' * 80}")
    assert message.endswith(f"integer {'9' * 40}... (160+ characters) has 5000 characters; "
                            f"at most 100")


def test_integer_of_5000_digits_in_a_file_names_the_line(tmp_path):
    path = write(tmp_path, "big.yml", "architecture: YOLOv3\n\nrandom_seed: " + "1" * 5000 + "\n")
    assert config_error(load_config, path).startswith(f"{path}:3: integer 1111")


def test_huge_list_index_in_an_override_is_out_of_range():
    message = config_error(load_config, DETECTION,
                           DET_OVERRIDES + ["LearningRate.schedulers." + "9" * 5000 + ".gamma=1"])
    assert "out of range for 'LearningRate.schedulers' (2 items)" in message


@pytest.mark.parametrize("value, expected", [
    ("!!float abc", "cannot read !!float value 'abc': could not convert string to float: 'abc'"),
    ("!!int 12abc", "cannot read !!int value '12abc': invalid literal for int()")])
def test_value_error_of_a_yaml_constructor_is_a_config_error(value, expected):
    message = config_error(load_config, DETECTION, DET_OVERRIDES + [f"max_iters={value}"])
    assert message.startswith(f"-o max_iters={value}: {expected}")


# --- 12: alias bombs and bounded echoes ---

def test_alias_bomb_is_refused_fast_and_small(tmp_path):
    path = write(tmp_path, "bomb.yml", alias_bomb())
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = config_error(load_config, path)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a2 holds 1111 values; the aliases of it in a3 (line 6) pass MAX_EXPANDED_VALUES.
    assert message == (f"{path}:6: alias '*a2' expands the YAML to more than "
                       f"{MAX_EXPANDED_VALUES} values (anchors that repeat aliases of anchors "
                       f"multiply); a config has a few hundred values")
    assert seconds < 0.5 and peak < 20 * 2 ** 20, (seconds, peak)


def test_long_string_aliased_many_times_is_refused(tmp_path):
    lines = ["architecture: YOLOv3", "save_dir: &long " + "x" * 100_000, "pretrain_weights:"]
    lines += ["  - *long"] * 20
    path = write(tmp_path, "strings.yml", "\n".join(lines))
    # 100000 characters at line 2, and each alias adds as many: the tenth (line 13) passes.
    assert config_error(load_config, path) == (
        f"{path}:13: alias '*long' expands the YAML to more than {MAX_EXPANDED_CHARACTERS} "
        f"characters (anchors that repeat aliases of anchors multiply); a config has a few "
        f"hundred values")


def test_aliases_within_the_limit_load():
    assert parse_yaml("a: &x [1, 2]\nb: *x\nc: {<<: &m {k: 1}, j: 2}\nd: *m", "t.yml") == {
        "a": [1, 2], "b": [1, 2], "c": {"k": 1, "j": 2}, "d": {"k": 1}}


def test_too_many_values_without_aliases_is_refused(monkeypatch):
    monkeypatch.setattr(yaml_io, "MAX_EXPANDED_VALUES", 100)  # the real limit, parsed faster
    assert parse_yaml("[" + ",".join(["1"] * 99) + "]", "many.yml") == [1] * 99
    assert config_error(parse_yaml, "[" + ",".join(["1"] * 100) + "]", "many.yml") == (
        "many.yml:1: more than 100 values; a config has a few hundred values")


def test_wrong_type_echo_of_a_large_value_is_cut():
    items = ",".join(["123456789"] * 500)
    message = config_error(load_config, DETECTION, DET_OVERRIDES + [f"max_iters=[{items}]"])
    assert "key 'max_iters' must be int or one of 'auto', got [123456789, 123456789" in message
    assert message.endswith(", ...] (list)")


def test_shorten_of_a_shared_structure_does_bounded_work():
    value = ["lol"]
    for _ in range(7):  # 10**7 items if it were expanded (a full repr takes seconds)
        value = [value] * 10
    started = time.perf_counter()
    text = shorten(value)
    assert time.perf_counter() - started < 0.2  # a full repr takes seconds
    assert text.startswith("[[[[...], [...],") and len(text) < 260


@pytest.mark.parametrize("text, expected", [
    ("architecture: YOLOv3\n? " + "x" * 5000 + "\n: 1\n", "unknown key 'xxxx"),
    ("architecture: YOLOv3\nmetric: " + "V" * 5000 + "\n", "key 'metric': 'VVVV"),
    ("architecture: YOLOv3\nYOLOv3:\n  ? " + "k" * 5000 + "\n  : 1\n", "unknown key 'kkkk"),
    ("architecture: YOLOv3\nYOLOv3:\n  ? " + "k" * 5000 + "\n  : 1\n  ? " + "k" * 5000
     + "\n  : 2\n", "duplicate key 'kkkk"),
    ("architecture: " + "Y" * 5000 + "\n", "'YYYY"),
    ("architecture: YOLOv3\nmax_iters: !" + "T" * 5000 + " {}\n", "unknown tag '!TTTT"),
])
def test_echoed_keys_and_values_are_cut(tmp_path, text, expected):
    message = config_error(load_config, write(tmp_path, "long.yml", text))
    assert expected in message


def test_echoed_slim_config_names_are_cut(tmp_path):
    name = "s" * 5000
    text = (f"version: 1.0\npruners: {{p: {{class: StructurePruner}}}}\n"
            f"strategies:\n  ? {name}\n  : {{class: UniformPruneStrategy, pruner: q}}\n"
            f"compressor: {{epoch: 1, strategies: [{name}]}}\n")
    message = config_error(load_slim_config, write(tmp_path, "slim.yaml", text))
    assert "strategy 'ssss" in message and "names pruner 'q'" in message


def test_echoed_key_paths_are_cut(tmp_path):
    pattern = "p" * 5000
    text = (f"version: 1.0\npruners:\n  p:\n    class: StructurePruner\n    criterions:\n"
            f"      ? {pattern}\n      : l2_norm\ncompressor: {{epoch: 1}}\n")
    message = config_error(load_slim_config, write(tmp_path, "slim.yaml", text))
    assert "key 'pruners.p.criterions.pppp" in message and "'l2_norm' is not one of" in message


def test_control_characters_in_an_override_key_are_escaped():
    message = config_error(load_config, DETECTION, DET_OVERRIDES + ["max\x1b[2Jiters=5"])
    assert message.startswith("-o max\\x1b[2Jiters=5: unknown key 'max\\x1b[2Jiters'")


# --- unreadable files ---

def test_directory_as_config(tmp_path):
    assert config_error(load_config, str(tmp_path)) == f"config path is not a file: {tmp_path}"


def test_config_file_not_utf8(tmp_path):
    path = write(tmp_path, "latin1.yml", "architecture: YOLOv3\nsave_dir: caf\u00e9\n".encode("latin-1"))
    assert config_error(load_config, path) == (
        f"{path}:2: not UTF-8 text (byte 0xe9); save the config as UTF-8")


def test_config_file_without_permission(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.yml", "architecture: YOLOv3\n")

    def refuse(name, *args, **kwargs):  # the tests may run as root, which chmod cannot stop
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(yaml_io, "open", refuse, raising=False)
    assert config_error(load_slim_config, path) == (
        f"cannot read config file: Permission denied: '{path}'")


def test_config_file_too_large(tmp_path):
    path = write(tmp_path, "huge.yml", "# padding\n" * (yaml_io.MAX_CONFIG_BYTES // 10 + 1))
    assert config_error(load_config, path) == (
        f"{path}: larger than 256 KiB; a config file is a few KB of YAML")


def test_override_value_too_large():
    message = config_error(load_config, DETECTION, DET_OVERRIDES + ["save_dir=" + "x" * 300_000])
    assert message.endswith(": 300000 characters is too long for a config (at most 262144)")


def test_config_file_name_with_nul_byte():
    assert config_error(load_config, "a\x00b.yml") == "config file name 'a\\x00b.yml' contains a NUL byte"


# --- end to end: every CLI that loads a config prints one line, exit 2 ---

@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    return {"bomb": write(directory, "bomb.yml", alias_bomb()),
            "nul": write(directory, "nul.yml", "architecture: YOLOv3\x00\n"),
            "deep": write(directory, "deep.yml", "architecture: " + "[" * 500 + "]" * 500),
            "out": str(directory / "out")}


def _cli_runs(files, config, overrides):
    """(main, argv) of every CLI that loads a detection config."""
    options = ["-o", *overrides] if overrides else []
    return [
        (config_cli.main, ["analyze", config, *options]),
        (compress_cli.main, ["-s", SLIM, "-c", config, *options]),
        (eval_cli.main, ["-c", config, "-m", files["out"] + "/model", *options]),
        (infer_cli.main, ["-c", config, "--model_path", files["out"] + "/model", "--infer_img", DETECTION,
                          "--output_dir", files["out"], *options]),
        (slim_cli.main, ["inspect", "-c", config, *options]),
        (pretrain.main, ["-c", config, "--out", files["out"], *options]),
    ]


@pytest.mark.parametrize("case, expected", [
    ("bomb", ":6: alias '*a2' expands the YAML to more than"),
    ("nul", ":1: a NUL byte (U+0000) at column 21"),
    ("deep", f":1: nested more than {MAX_NESTING} levels deep"),
])
def test_every_cli_prints_one_line_for_a_hostile_config_file(capsys, hostile_files, case, expected):
    config = hostile_files[case]
    with open(config, "rb") as handle:
        before = handle.read()
    for main, argv in _cli_runs(hostile_files, config, []):
        code, error = _exit_code_and_error(capsys, main, argv)
        assert code == 2 and error.startswith(f"error: {config}{expected}"), (main, error)
    with open(config, "rb") as handle:
        assert handle.read() == before
    assert not os.path.exists(hostile_files["out"])


@pytest.mark.parametrize("item, expected", [
    ("save_dir=a\x01b", "error: -o save_dir=a\\x01b: a control character (U+0001)"),
    ("max_iters=" + "7" * 5000, "has 5000 characters; at most 100"),
])
def test_every_cli_prints_one_line_for_a_hostile_override(capsys, hostile_files, item, expected):
    for main, argv in _cli_runs(hostile_files, DETECTION, DET_OVERRIDES + [item]):
        code, error = _exit_code_and_error(capsys, main, argv)
        assert code == 2 and expected in error and len(error) < MESSAGE_BOUND, (main, error)


def test_hostile_slim_config_through_compress(capsys, hostile_files):
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                  ["-s", hostile_files["bomb"], "-c", DETECTION, "-o", *DET_OVERRIDES])
    assert code == 2 and error.startswith(f"error: {hostile_files['bomb']}:6: alias '*a2'")
