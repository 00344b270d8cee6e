"""The config system on small test-only modules: types, tags, overrides, create, errors, CLI."""
import shlex
import textwrap
from typing import Dict, List, Literal, Optional, Tuple, Union

import pytest
import yaml

from slim.config import REGISTRY, Config, ConfigLoader, apply_override, create, load_config
from slim.config.cli import analyze_config, generate_modules, help_module, list_modules, main
from slim.config.loader import import_module_packages
from slim.config.validate import InvalidValue, ModuleName, check_value, options_of, validate_options
from slim.config.yaml_io import parse_yaml
from slim.errors import ConfigError

# --- test-only modules (registered by the `toy_modules` fixture, removed after each test) ---

class ToyDataSet:
    """A toy dataset.

    Args:
        dataset_dir: root directory.
        annotation: list file.
        use_default_label: use the built-in labels.
    """

    def __init__(self, dataset_dir: str = "data/toy", annotation: str = "train.txt",
                 use_default_label: bool = True):
        self.dataset_dir = dataset_dir
        self.annotation = annotation
        self.use_default_label = use_default_label


class ToyFeed:
    """A toy feed.

    Args:
        dataset: the dataset.
        batch_size: images per batch.
        image_shape: [C, H, W].
        sizes: multi-scale sizes.
    """

    def __init__(self, dataset: ToyDataSet = ToyDataSet(annotation="test.txt"),  # noqa: B008 (as the feeds)
                 batch_size: int = 8,
                 image_shape: Tuple[int, int, int] = (3, 32, 32), sizes: list[int] = (32, 64)):
        self.dataset = dataset
        self.batch_size = batch_size
        self.image_shape = image_shape
        self.sizes = sizes


class ToyBackbone:
    """A toy backbone.

    Args:
        width: channel multiplier.
        depth: number of blocks.
        norm: normalization.
    """

    def __init__(self, width: float = 1.0, depth: int = 3, norm: Literal["bn", "sync_bn"] = "bn"):
        if width <= 0:
            raise ConfigError(f"ToyBackbone.width must be > 0, got {width}")
        self.width = width
        self.depth = depth
        self.norm = norm


class ToyHead:
    """A toy head.

    Args:
        num_classes: classes (shared with the top level).
        score_threshold: optional threshold.
        anchors: [w, h] pairs.
        weights: loss weights by name.
        mode: a number or a name.
    """
    __shared__ = ["num_classes"]

    def __init__(self, num_classes: int = 3, score_threshold: Optional[float] = None,
                 anchors: List[Tuple[int, int]] = ((10, 13), (16, 30)),
                 weights: Dict[str, float] = {"box": 1.0},  # noqa: B006 (read only)
                 mode: int | str = 1):
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.anchors = anchors
        self.weights = weights
        self.mode = mode


class ToyDetector:
    """A toy detector.

    Args:
        backbone: backbone module.
        head: head module.
    """
    __inject__ = ["backbone", "head"]

    def __init__(self, backbone: str = "ToyBackbone", head: str = "ToyHead"):
        self.backbone = backbone
        self.head = head


class ToyStep:
    """A toy schedule step.

    Args:
        gamma: factor.
        milestones: iterations.
    """

    def __init__(self, gamma: float = 0.1, milestones: List[int] = (10, 20)):
        self.gamma = gamma
        self.milestones = list(milestones)


class ToyWarm:
    """A toy warmup.

    Args:
        steps: iterations.
    """

    def __init__(self, steps: int = 5):
        self.steps = steps


class ToyPlan:
    """A toy plan holding tagged steps.

    Args:
        base: base value.
        steps: tagged step objects.
    """

    def __init__(self, base: float = 1.0, steps: list = ()):
        self.base = base
        self.steps = list(steps)

    @classmethod
    def check_config(cls, options):
        if options["base"] < 0:
            raise ConfigError(f"base must be >= 0, got {options['base']}")


class ToyCycleA:
    """Injects ToyCycleB.

    Args:
        other: module.
    """
    __inject__ = ["other"]

    def __init__(self, other: str = "ToyCycleB"):
        self.other = other


class ToyCycleB:
    """Injects ToyCycleA.

    Args:
        other: module.
    """
    __inject__ = ["other"]

    def __init__(self, other: str = "ToyCycleA"):
        self.other = other


TOY_CLASSES = (ToyDataSet, ToyFeed, ToyBackbone, ToyHead, ToyDetector, ToyStep, ToyWarm, ToyPlan,
               ToyCycleA, ToyCycleB)


@pytest.fixture
def toy_modules():
    import_module_packages()  # the real modules first: the registry is restored to this state
    with REGISTRY.temporary():
        for cls in TOY_CLASSES:
            REGISTRY.register(cls)
        yield


@pytest.fixture
def write(tmp_path):
    def write_config(text, name="config.yml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write_config


TOY_CONFIG = textwrap.dedent("""\
    architecture: ToyDetector
    train_feed: ToyFeed
    max_iters: 100
    num_classes: 7
    ToyDetector:
      backbone: ToyBackbone
      head: ToyHead
    ToyBackbone:
      width: 1
    ToyFeed:
      batch_size: 4
      dataset:
        dataset_dir: data/x
    ToyPlan:
      base: 2
      steps: [!ToyStep {gamma: 0.5, milestones: [3, 6]}, !ToyWarm {steps: 2}]
    """)


# --- type checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, annotation, expected", [
    (3, float, 3.0),
    (2.5, float, 2.5),
    (3, int, 3),
    (False, bool, False),
    ("x", str, "x"),
    ([1, 2], list[int], [1, 2]),
    ([1, 2], List[int], [1, 2]),
    ([1, 2], Tuple[int, int], (1, 2)),
    ([1, 2, 3], Tuple[int, ...], (1, 2, 3)),
    ([[1, 2]], List[Tuple[int, int]], [(1, 2)]),
    ([1, 2], List[float], [1.0, 2.0]),
    (None, Optional[int], None),
    (5, Optional[int], 5),
    (None, int | None, None),
    ("auto", Union[int, Literal["auto"]], "auto"),
    (7, Union[int, Literal["auto"]], 7),
    (2, int | str, 2),
    ("two", int | str, "two"),
    ("VOC", Literal["VOC", "COCO"], "VOC"),
    ({"a": 1}, Dict[str, float], {"a": 1.0}),
    ({"x": [1]}, dict, {"x": [1]}),
    ({"x": 1}, None, {"x": 1}),
])
def test_check_value_accepts_and_converts(value, annotation, expected):
    result = check_value(value, annotation, ("Mod", "key"))
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(expected, (list, tuple)) and expected:
        assert type(result[0]) is type(expected[0])


@pytest.mark.parametrize("value, annotation, message", [
    ("3", int, "key 'Mod.key' must be int, got '3' (str)"),
    (True, int, "key 'Mod.key' must be int, got True (bool)"),
    (1.5, int, "key 'Mod.key' must be int, got 1.5 (float)"),
    (None, int, "key 'Mod.key' must be int, got None (NoneType)"),
    ("x", float, "key 'Mod.key' must be float, got 'x' (str)"),
    (1, bool, "key 'Mod.key' must be bool (true/false), got 1 (int)"),
    (1, str, "key 'Mod.key' must be str, got 1 (int)"),
    (3, list[int], "key 'Mod.key' must be list[int] (a YAML list), got 3 (int)"),
    ([1, "x"], list[int], "key 'Mod.key[1]' must be int, got 'x' (str)"),
    ([1, 2, 3], Tuple[int, int], "key 'Mod.key' must be tuple[int, int] (2 items), got 3 items"),
    ("voc", Literal["VOC", "COCO"], "key 'Mod.key': 'voc' is not one of 'VOC', 'COCO' "
                                    "(did you mean 'VOC'?)"),
    (1.5, Union[int, Literal["auto"]], "key 'Mod.key' must be int or one of 'auto', got 1.5 (float)"),
    ("x", Dict[str, int], "key 'Mod.key' must be dict[str, int] (a YAML mapping), got 'x' (str)"),
    ({"a": "b"}, Dict[str, int], "key 'Mod.key.a' must be int, got 'b' (str)"),
    ("NoSuchModule", ModuleName, "key 'Mod.key': 'NoSuchModule' (str) is not a registered module"),
])
def test_check_value_rejects_with_key_value_and_type(value, annotation, message):
    with pytest.raises(InvalidValue) as error:
        check_value(value, annotation, ("Mod", "key"))
    assert error.value.message.startswith(message)


# --- loading, defaults, shared keys, create ----------------------------------------------------

def test_load_config_validates_sections_and_fills_defaults(toy_modules, write):
    cfg = load_config(write(TOY_CONFIG))
    assert isinstance(cfg, Config)
    assert cfg.max_iters == 100 and cfg["max_iters"] == 100
    assert cfg.use_gpu is True and cfg.metric == "VOC" and cfg.map_type == "11point"
    assert cfg["ToyBackbone"] == {"width": 1.0, "depth": 3, "norm": "bn"}
    assert type(cfg["ToyBackbone"]["width"]) is float
    # a nested mapping keeps the feed's default dataset for keys it does not set
    assert cfg["ToyFeed"]["dataset"] == {"dataset_dir": "data/x", "annotation": "test.txt",
                                         "use_default_label": True}
    assert cfg["ToyFeed"]["batch_size"] == 4 and cfg["ToyFeed"]["image_shape"] == (3, 32, 32)
    plan = cfg["ToyPlan"]
    assert plan["base"] == 2.0
    step, warm = plan["steps"]
    assert isinstance(step, ToyStep) and (step.gamma, step.milestones) == (0.5, [3, 6])
    assert isinstance(warm, ToyWarm) and warm.steps == 2
    assert "ToyHead" not in cfg  # no section: create() uses defaults
    assert cfg.explicit_keys == {"architecture", "train_feed", "max_iters", "num_classes"}


def test_a_section_may_be_a_tagged_object(toy_modules, write):
    cfg = load_config(write("architecture: ToyDetector\nToyBackbone: !ToyBackbone {depth: 9}\n"))
    assert cfg["ToyBackbone"] == {"width": 1.0, "depth": 9, "norm": "bn"}


def test_max_iters_auto_is_the_default_and_accepted(toy_modules, write):
    assert load_config(write("architecture: ToyDetector\n")).max_iters == "auto"
    assert load_config(write("architecture: ToyDetector\nmax_iters: auto\n")).max_iters == "auto"


def test_shared_key_comes_from_top_level_unless_the_section_sets_it(toy_modules, write):
    cfg = load_config(write(TOY_CONFIG))
    assert create("ToyHead", cfg).num_classes == 7
    cfg = load_config(write(TOY_CONFIG + "ToyHead:\n  num_classes: 2\n"))
    assert cfg["ToyHead"]["num_classes"] == 2 and create("ToyHead", cfg).num_classes == 2
    # the top level not set: the module's own default, not the top-level default (80)
    cfg = load_config(write("architecture: ToyDetector\nToyHead: {}\n"))
    assert cfg["ToyHead"]["num_classes"] == 3 and create("ToyHead", cfg).num_classes == 3


def test_create_injects_modules_and_builds_nested_instances(toy_modules, write):
    cfg = load_config(write(TOY_CONFIG))
    detector = create(cfg.architecture, cfg)
    assert isinstance(detector.backbone, ToyBackbone) and detector.backbone.width == 1.0
    assert isinstance(detector.head, ToyHead) and detector.head.num_classes == 7
    assert detector.head.anchors == [(10, 13), (16, 30)]
    feed = create("ToyFeed", cfg)
    assert isinstance(feed.dataset, ToyDataSet)
    assert (feed.dataset.dataset_dir, feed.dataset.annotation) == ("data/x", "test.txt")
    plan = create("ToyPlan", cfg)
    assert [type(s) for s in plan.steps] == [ToyStep, ToyWarm]
    # a plain mapping works too (same shape as a Config)
    assert create("ToyBackbone", {"ToyBackbone": {"depth": 5}}).depth == 5


def test_create_reports_circular_injection_and_names_the_file(toy_modules, write):
    with pytest.raises(ConfigError, match="circular module injection: ToyCycleA -> ToyCycleB -> "
                                          "ToyCycleA"):
        create("ToyCycleA", {})
    path = write("architecture: ToyDetector\nToyBackbone: {width: -1}\n")
    with pytest.raises(ConfigError) as error:
        create("ToyDetector", load_config(path))
    assert str(error.value) == f"{path}: ToyBackbone.width must be > 0, got -1.0"


# --- tags ------------------------------------------------------------------------------------------

def test_tag_builds_an_instance_with_validated_options(toy_modules):
    step = parse_yaml("!ToyStep {gamma: 1, milestones: [4]}", "t.yml")
    assert isinstance(step, ToyStep) and step.gamma == 1.0 and type(step.gamma) is float
    assert options_of(step) == {"gamma": 1.0, "milestones": [4]}
    assert parse_yaml("!ToyWarm", "t.yml").steps == 5  # an empty tag: all defaults


def test_tag_errors_name_file_line_tag_and_known_tags(toy_modules):
    with pytest.raises(ConfigError) as error:
        parse_yaml("a: 1\nb: !ToyStp {gamma: 1}\n", "t.yml")
    message = str(error.value)
    assert message.startswith("t.yml:2: unknown tag '!ToyStp' (did you mean '!ToyStep'?); known tags: ")
    assert "!ToyWarm" in message and "!LearningRate" in message
    with pytest.raises(ConfigError, match=r"^t.yml:1: unknown key 'gama' in ToyStep \('!ToyStep'\) "
                                          r"\(did you mean 'gamma'\?\)"):
        parse_yaml("!ToyStep {gama: 1}", "t.yml")
    with pytest.raises(ConfigError, match=r"^t.yml:1: key '!ToyStep.gamma' must be float, got 'x'"):
        parse_yaml("!ToyStep {gamma: x}", "t.yml")
    with pytest.raises(ConfigError, match=r"^t.yml:1: tag '!ToyStep' must tag a mapping"):
        parse_yaml("!ToyStep [1, 2]", "t.yml")


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['echo unsafe']",
    "x: !!python/object:collections.OrderedDict {}",
    "!!python/name:os.system ''",
])
def test_unsafe_yaml_tags_are_refused(text):
    with pytest.raises(ConfigError) as error:
        parse_yaml(text, "t.yml")
    assert "is not allowed (safe YAML only)" in str(error.value)
    assert str(error.value).startswith("t.yml:1: YAML tag '!!python/")


def test_loader_is_a_safe_loader_and_does_not_change_yaml_safe_load(toy_modules):
    assert issubclass(ConfigLoader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("!ToyStep {}")
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # PyYAML's own resolvers untouched


def test_yaml_details_duplicate_keys_exponent_floats_and_syntax_errors():
    assert parse_yaml("a: 1e-3\nb: 2E4\nc: 0.\nd: 1_000", "t.yml") == {
        "a": 0.001, "b": 20000.0, "c": 0.0, "d": 1000}
    with pytest.raises(ConfigError, match=r"^t.yml:3: duplicate key 'a' \(first set at line 1\)$"):
        parse_yaml("a: 1\nb: 2\na: 3\n", "t.yml")
    with pytest.raises(ConfigError) as error:
        parse_yaml("a: [1, 2\nb: 3\n", "t.yml")
    assert str(error.value).startswith("t.yml: invalid YAML: ") and "\n" not in str(error.value)


# --- overrides -------------------------------------------------------------------------------------

def test_overrides_set_nested_keys_parse_yaml_and_create_sections(toy_modules, write):
    cfg = load_config(write(TOY_CONFIG), [
        "max_iters=258",
        "ToyFeed.batch_size=64",
        "ToyFeed.dataset.dataset_dir=other/dir",
        "ToyFeed.sizes=[96, 128]",
        "ToyHead.anchors=[[1, 2], [3, 4]]",
        "ToyHead.score_threshold=",
        "ToyBackbone.norm=sync_bn",
        "ToyPlan.steps=[!ToyStep {gamma: 0.2, milestones: [110000, 124000]}, !ToyWarm {steps: 2000}]",
    ])
    assert cfg.max_iters == 258
    assert cfg["ToyFeed"]["batch_size"] == 64 and cfg["ToyFeed"]["sizes"] == [96, 128]
    assert cfg["ToyFeed"]["dataset"] == {"dataset_dir": "other/dir", "annotation": "test.txt",
                                         "use_default_label": True}
    assert cfg["ToyHead"]["anchors"] == [(1, 2), (3, 4)] and cfg["ToyHead"]["score_threshold"] is None
    assert cfg["ToyBackbone"] == {"width": 1.0, "depth": 3, "norm": "sync_bn"}
    step, warm = cfg["ToyPlan"]["steps"]
    assert (step.gamma, step.milestones, warm.steps) == (0.2, [110000, 124000], 2000)
    assert cfg.overrides[0] == "max_iters=258"


def test_overrides_address_tagged_objects_in_lists_by_index_or_tag_name(toy_modules, write):
    cfg = load_config(write(TOY_CONFIG), ["ToyPlan.steps.ToyStep.milestones=[7, 9]",
                                          "ToyPlan.steps.1.steps=11"])
    step, warm = cfg["ToyPlan"]["steps"]
    assert (step.gamma, step.milestones, warm.steps) == (0.5, [7, 9], 11)
    with pytest.raises(ConfigError, match=r"^-o ToyPlan.steps.ToyWarm.steps=x: key "
                                          r"'ToyPlan.steps\[1\].steps' must be int, got 'x'"):
        load_config(write(TOY_CONFIG), ["ToyPlan.steps.ToyWarm.steps=x"])
    with pytest.raises(ConfigError, match=r"has no item 'ToyNope'; address an item by index \(0..1\) "
                                          r"or by tag name \(ToyStep, ToyWarm\)"):
        load_config(write(TOY_CONFIG), ["ToyPlan.steps.ToyNope.steps=1"])
    with pytest.raises(ConfigError, match=r"index 5 out of range for 'ToyPlan.steps' \(2 items\)"):
        load_config(write(TOY_CONFIG), ["ToyPlan.steps.5.steps=1"])


@pytest.mark.parametrize("override, message", [
    ("max_iters", "-o max_iters: expected key=value (e.g. YoloTrainFeed.batch_size=64)"),
    ("=3", "-o =3: empty key"),
    ("ToyFeed..batch_size=3", "-o ToyFeed..batch_size=3: empty key"),
    ("ToyFeed.batch_size=abc", "-o ToyFeed.batch_size=abc: key 'ToyFeed.batch_size' must be int, "
                               "got 'abc' (str)"),
    ("ToyFeed.batch_sise=3", "-o ToyFeed.batch_sise=3: unknown key 'batch_sise' in ToyFeed "
                             "(did you mean 'batch_size'?); valid keys: dataset, batch_size, "
                             "image_shape, sizes"),
    ("ToyFeed.dataset.dataset_dri=x", "-o ToyFeed.dataset.dataset_dri=x: unknown key 'dataset_dri' "
                                      "in ToyDataSet ('ToyFeed.dataset') (did you mean "
                                      "'dataset_dir'?)"),
    ("ToyFed.batch_size=3", "-o ToyFed.batch_size=3: unknown key 'ToyFed' (did you mean "
                            "'ToyFeed'?); valid top-level keys: architecture, "),
    ("ToyFeed.batch_size.x=3", "-o ToyFeed.batch_size.x=3: cannot set 'x' inside "
                               "'ToyFeed.batch_size', which is 4, not a mapping"),
    ("ToyBackbone.norm=gn", "-o ToyBackbone.norm=gn: key 'ToyBackbone.norm': 'gn' is not one of "
                            "'bn', 'sync_bn'"),
    ("ToyPlan.base=-1", "<path> (with -o ToyPlan.base=-1): ToyPlan: base must be >= 0, got -1.0"),
    ("ToyPlan.steps=[!ToyStp {}]", "-o ToyPlan.steps=[!ToyStp {}]: unknown tag '!ToyStp' (did you "
                                   "mean '!ToyStep'?)"),
    ("ToyPlan.steps=[1, 2", "-o ToyPlan.steps=[1, 2: invalid YAML: "),
    ("metric=coco", "-o metric=coco: key 'metric': 'coco' is not one of 'VOC', 'COCO' "
                    "(did you mean 'COCO'?)"),
    ("max_iters=-5", "-o max_iters=-5: key 'max_iters' must be a positive integer or 'auto', got -5"),
    ("architecture=ToyDetecter", "-o architecture=ToyDetecter: key 'architecture': 'ToyDetecter' "
                                 "(str) is not a registered module (did you mean 'ToyDetector'?)"),
    ("ToyDetector.head=ToyHaed", "-o ToyDetector.head=ToyHaed: key 'ToyDetector.head': 'ToyHaed' "
                                 "(str) is not a registered module (did you mean 'ToyHead'?)"),
])
def test_override_errors_name_the_override_and_what_is_valid(toy_modules, write, override, message):
    path = write(TOY_CONFIG)
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert str(error.value).startswith(message.replace("<path>", path))
    assert "\n" not in str(error.value)


def test_apply_override_on_a_raw_tree():
    tree = {"A": {"b": 1}}
    apply_override(tree, "A.c.d=[1, 2]")
    apply_override(tree, "E=x")
    assert tree == {"A": {"b": 1, "c": {"d": [1, 2]}}, "E": "x"}


# --- file errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("architecture: ToyDetector\nmax_iter: 3\n", "unknown key 'max_iter' (did you mean 'max_iters'?)"),
    ("architecture: ToyDetector\nToyBackbone:\n  widht: 2\n",
     "unknown key 'widht' in ToyBackbone (did you mean 'width'?); valid keys: width, depth, norm"),
    ("architecture: ToyDetector\nToyBackbone: 3\n",
     "'ToyBackbone' must be a mapping of ToyBackbone options, got 3 (int)"),
    ("architecture: ToyDetector\nToyFeed:\n  image_shape: [3, 32]\n",
     "key 'ToyFeed.image_shape' must be tuple[int, int, int] (3 items), got 2 items: [3, 32]"),
    ("architecture: ToyDetector\nToyFeed:\n  dataset: data\n",
     "key 'ToyFeed.dataset' must be a mapping of ToyDataSet options (or !ToyDataSet {...}), "
     "got 'data' (str)"),
    ("architecture: ToyDetector\nuse_gpu: yes please\n",
     "key 'use_gpu' must be bool (true/false), got 'yes please' (str)"),
    ("max_iters: 3\n", "missing required key 'architecture' in top level (module name)"),
    ("- a\n- b\n", "a config must be a YAML mapping of keys, got list"),
])
def test_file_errors_name_the_file_and_the_key(toy_modules, write, text, message):
    path = write(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_missing_config_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=f"^config file not found: {missing}$"):
        load_config(missing)


def test_error_in_file_is_blamed_on_the_file_even_with_overrides(toy_modules, write):
    path = write(TOY_CONFIG + "ToyHead:\n  mode: [1]\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["ToyFeed.batch_size=2"])
    assert str(error.value).startswith(f"{path}: key 'ToyHead.mode' must be int or str")


# --- the configure helper (python -m slim.config) ----------------------------------------------

def test_help_prints_description_options_template_and_override_lines(toy_modules):
    text = help_module("ToyFeed")
    assert text.splitlines()[0] == f"ToyFeed ({__name__})"
    assert "MODULE DESCRIPTION\n  A toy feed." in text
    assert "  batch_size   int" in text and "images per batch." in text
    template = text.split("CONFIGURATION TEMPLATE\n")[1].split("\n\n")[0]
    assert template == ("ToyFeed:\n  dataset:\n    dataset_dir: data/toy\n    annotation: test.txt\n"
                        "    use_default_label: true\n  batch_size: 8\n  image_shape: [3, 32, 32]\n"
                        "  sizes: [32, 64]")
    lines = text.split("COMMAND LINE OPTIONS\n")[1].splitlines()
    assert [line.strip() for line in lines] == [
        "-o ToyFeed.dataset.dataset_dir=data/toy", "-o ToyFeed.dataset.annotation=test.txt",
        "-o ToyFeed.dataset.use_default_label=true", "-o ToyFeed.batch_size=8",
        "-o ToyFeed.image_shape='[3, 32, 32]'", "-o ToyFeed.sizes='[32, 64]'"]


@pytest.mark.parametrize("module", ["ToyFeed", "ToyHead", "ToyPlan", "LearningRate", "PiecewiseDecay",
                                    "OptimizerBuilder"])
def test_help_override_lines_and_generate_reproduce_the_defaults(toy_modules, module):
    spec = REGISTRY.get(module)
    defaults = validate_options(spec, {}, (module,))
    tree = {}
    for line in help_module(module).split("COMMAND LINE OPTIONS\n")[1].splitlines():
        flag, item = shlex.split(line)
        assert flag == "-o"
        apply_override(tree, item)
    from_overrides = validate_options(spec, tree[module], (module,))
    from_template = validate_options(spec, parse_yaml(generate_modules([module]), "t")[module],
                                     (module,))

    def comparable(value):
        if REGISTRY.spec_of_instance(value) is not None:
            return comparable(options_of(value))  # an instance equals a mapping of its options
        if isinstance(value, dict):
            return {k: comparable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [comparable(v) for v in value]
        return value
    assert comparable(from_overrides) == comparable(defaults) == comparable(from_template)


def test_generate_prints_each_module_section(toy_modules):
    text = generate_modules(["ToyBackbone", "ToyWarm"])
    assert text == "ToyBackbone:\n  width: 1.0\n  depth: 3\n  norm: bn\n\nToyWarm:\n  steps: 5"


def test_list_prints_top_level_keys_and_modules_with_descriptions(toy_modules):
    text = list_modules()
    assert "  max_iters          int or one of 'auto'" in text
    assert f"  [{__name__}]" in text
    assert any(line.split() == ["ToyBackbone", "A", "toy", "backbone."] for line in text.splitlines())
    assert any(line.split()[:1] == ["LearningRate"] for line in text.splitlines())


def test_analyze_marks_values_that_differ_from_defaults(toy_modules, write):
    text = analyze_config(write(TOY_CONFIG), ["ToyFeed.batch_size=64"])
    lines = text.splitlines()
    assert "max_iters: 100  # default: auto" in lines
    assert "use_gpu: true" in lines
    assert "  batch_size: 64  # default: 8" in lines
    assert "    dataset_dir: data/x  # default: data/toy" in lines
    assert "    annotation: test.txt" in lines  # the feed's default dataset, not ToyDataSet's
    assert "  width: 1.0" in lines
    assert "# used with all defaults (no section): ToyHead" in lines
    assert lines[-1] == "# 7 value(s) differ from defaults"
    # what analyze prints is a loadable config with the same values
    reloaded = load_config(write(text, "analyzed.yml"))
    assert reloaded["ToyFeed"] == load_config(write(TOY_CONFIG), ["ToyFeed.batch_size=64"])["ToyFeed"]


def test_cli_user_errors_exit_2_with_one_line(toy_modules, write, capsys):
    for argv, message in [
        (["help", "ToyFed"], "error: unknown module 'ToyFed' (did you mean 'ToyFeed'?); known: "),
        (["generate", "ToyBackbone", "Nope"], "error: unknown module 'Nope'"),
        (["analyze", write(TOY_CONFIG), "-o", "ToyFeed.batch_size=x"],
         "error: -o ToyFeed.batch_size=x: key 'ToyFeed.batch_size' must be int, got 'x' (str)"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1
