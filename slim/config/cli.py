"""`python -m slim.config list | help NAME | generate MODULE... | analyze FILE [-o ...]`.

The successor of PaddleDetection's tools/configure.py: what modules exist,
what each option means and defaults to, a YAML template, the `-o` lines that
override each option, and which values of a config differ from the defaults.
`list` and `help` also cover the classes of the slim config (-s/--slim_file):
pruners, strategies and the compressor block.
"""
import shlex
import sys
import textwrap

from slim.config.loader import import_module_packages, load_config
from slim.config.registry import REGISTRY, REQUIRED
from slim.config.schema import TOP_LEVEL
from slim.config.slim_config import SUPPORTED_VERSIONS, config_class_specs
from slim.config.validate import option_types, options_of, type_name
from slim.config.yaml_io import flow_value
from slim.errors import ArgumentParser, ConfigError, did_you_mean, exit_on_user_error, shorten

_MISSING = object()

# Names the slim-config template gives its entries, and example values of the required options
# it needs to load (a strategy names a pruner; the compressor needs an epoch count). A new
# required option without an example is written `null  # required` and the template test fails.
_TEMPLATE_NAMES = {"pruners": "pruner_1", "strategies": "strategy_1"}
_REQUIRED_EXAMPLES = {("strategies", "pruner"): _TEMPLATE_NAMES["pruners"],
                      ("compressor", "epoch"): 1}


def _nested_option_defaults(annotation, default):
    """{key: default} one level down for an option whose value is a mapping, else None."""
    spec = REGISTRY.spec_of_class(annotation) if isinstance(annotation, type) else None
    if spec is not None:
        defaults = {name: option.default for name, option in spec.options.items()}
        if isinstance(default, dict):
            defaults.update(default)
        elif REGISTRY.spec_of_instance(default) is not None:
            defaults.update(options_of(default))
        return defaults
    if isinstance(default, dict):
        return dict(default)
    return None


def _normalized(value):
    """A comparable form: tuples as lists, registered instances as (tag, options)."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    spec = REGISTRY.spec_of_instance(value)
    if spec is not None:
        return ("!" + spec.name, _normalized(options_of(value)))
    return value


def _value_text(value):
    return "<required>" if value is REQUIRED else flow_value(value)


def render_mapping_lines(values, defaults, indent, annotations=None, mark_changes=False):
    """YAML lines of `values` (nested mappings as blocks, the rest in flow style).

    With `mark_changes`, a value that differs from `defaults` gets `# default: X`;
    a required option without value is written `null  # required (type)`.
    """
    annotations = annotations or {}
    pad = " " * indent
    lines = []
    for key, value in values.items():
        default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
        nested_defaults = _nested_option_defaults(annotations.get(key), default)
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{flow_value(key)}:")
            nested_annotations = {}
            spec = REGISTRY.spec_of_class(annotations.get(key)) if isinstance(
                annotations.get(key), type) else None
            if spec is not None:
                nested_annotations = option_types(spec)
            lines += render_mapping_lines(value, nested_defaults or {}, indent + 2,
                                          nested_annotations, mark_changes)
            continue
        if value is REQUIRED:
            lines.append(f"{pad}{flow_value(key)}: null  # required ({type_name(annotations.get(key))})")
            continue
        line = f"{pad}{flow_value(key)}: {flow_value(value)}"
        if (mark_changes and default is not _MISSING and default is not REQUIRED
                and _normalized(value) != _normalized(default)):
            line += "  # default: " + flow_value(default)
        lines.append(line)
    return lines


def module_template(spec):
    """A YAML section of `spec` with every option at its default."""
    defaults = {}
    annotations = option_types(spec)
    for name, option in spec.options.items():
        nested = _nested_option_defaults(annotations[name], option.default)
        defaults[name] = nested if nested is not None and option.default is not None else option.default
    return "\n".join([f"{spec.name}:"] + render_mapping_lines(defaults, {}, 2, annotations))


def override_lines(prefix, values, annotations=None):
    """`-o Module.option=default` lines, nested mappings expanded to dotted keys."""
    annotations = annotations or {}
    lines = []
    for key, value in values.items():
        nested = _nested_option_defaults(annotations.get(key), value)
        if nested and value is not None:
            spec = REGISTRY.spec_of_class(annotations.get(key)) if isinstance(
                annotations.get(key), type) else None
            lines += override_lines(f"{prefix}.{key}", nested, option_types(spec) if spec else {})
            continue
        text = "<value>" if value is REQUIRED else flow_value(value)
        lines.append(f"-o {prefix}.{key}={_shell_quote(text)}")
    return lines


def _shell_quote(text):
    """Quote a YAML value for a POSIX shell, readably: "''" rather than ''"'"''"'"''."""
    quoted = shlex.quote(text)
    if quoted != text and "'" in text and not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return quoted


def _option_rows(spec):
    annotations = option_types(spec)
    rows = []
    for name, option in spec.options.items():
        kind = "module name" if name in spec.inject else type_name(annotations[name])
        doc = option.doc or "(undocumented)"
        if name in spec.shared:
            doc += f" [shared: the top-level '{name}' applies when this section does not set it]"
        rows.append((name, kind, _value_text(option.default), doc))
    return rows


def _format_table(rows, header):
    """Aligned columns name / type / default, then the wrapped description."""
    widths = [min(max(len(row[i]) for row in rows + [header]), limit)
              for i, limit in enumerate((24, 28, 24))]
    doc_indent = 2 + sum(widths) + 2 * len(widths)
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3]]
    for row in rows:
        head = "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  "
        if len(head) > doc_indent:  # a long cell: the description goes on the next line
            lines.append(head.rstrip())
            head = " " * doc_indent
        wrapped = textwrap.wrap(row[3], width=max(40, 110 - doc_indent)) or [""]
        lines.append(head + wrapped[0])
        lines += [" " * doc_indent + more for more in wrapped[1:]]
    return lines


def list_modules():
    """Text of `list`: the top-level keys and every module with its one-line description."""
    lines = ["TOP-LEVEL KEYS"]
    lines += _format_table(_option_rows(TOP_LEVEL), ("key", "type", "default", "description"))
    lines += ["", "MODULES (python -m slim.config help NAME)"]
    by_category = {}
    for spec in REGISTRY.specs():
        by_category.setdefault(spec.category, []).append(spec)
    width = max((len(spec.name) for spec in REGISTRY.specs()), default=0)
    for category in sorted(by_category):
        lines.append(f"  [{category}]")
        for spec in by_category[category]:
            lines.append(f"    {spec.name.ljust(width)}  {spec.summary or '(undocumented)'}")
    lines += ["", "SLIM CONFIG CLASSES (-s/--slim_file; python -m slim.config help NAME)"]
    slim_classes = config_class_specs()
    width = max(len(name) for name in slim_classes)
    for section in dict.fromkeys(section for section, _ in slim_classes.values()):
        lines.append(f"  [{section}]")
        lines += [f"    {name.ljust(width)}  {spec.summary or '(undocumented)'}"
                  for name, (sec, spec) in slim_classes.items() if sec == section]
    return "\n".join(lines)


def help_module(name):
    """Text of `help NAME`: description, options, a YAML template and the `-o` lines
    (of a detection-config module or a slim-config class)."""
    slim_classes = config_class_specs()
    if name in slim_classes:
        return help_slim_class(name, *slim_classes[name])
    if name not in REGISTRY:
        raise ConfigError(f"unknown module '{shorten(name)}'"
                          f"{did_you_mean(name, REGISTRY.names() + list(slim_classes))}; "
                          f"known: {', '.join(REGISTRY.names())}; "
                          f"slim config classes: {', '.join(slim_classes)}")
    spec = REGISTRY.get(name)
    defaults = {n: option.default for n, option in spec.options.items()}
    parts = [f"{spec.name} ({spec.category})", "",
             "MODULE DESCRIPTION", textwrap.indent(spec.doc or "(undocumented)", "  "), "",
             "MODULE OPTIONS"]
    parts += _format_table(_option_rows(spec), ("option", "type", "default", "description")) or [
        "  (no options)"]
    if spec.inject:
        parts.append(f"  injected (name another module's section): {', '.join(spec.inject)}")
    parts += ["", "CONFIGURATION TEMPLATE", module_template(spec), "",
              "COMMAND LINE OPTIONS"]
    parts += ["  " + line for line in override_lines(spec.name, defaults, option_types(spec))]
    return "\n".join(parts)


def _slim_entry_lines(section, spec, values, indent):
    """YAML lines of the options `values` of one slim-config part; required ones marked."""
    annotations = option_types(spec)
    lines = [] if section == "compressor" else [" " * indent + f"class: {spec.name}"]
    for key, value in values.items():
        key_lines = render_mapping_lines({key: value}, {}, indent, annotations)
        if spec.options[key].required and value is not REQUIRED:
            key_lines[0] += f"  # required ({type_name(annotations[key])})"
        lines += key_lines
    return lines


def _slim_entry_values(section, spec, every_option):
    """{option: value} of a template entry: every option at its default, or only the required
    ones; required options get their example value."""
    return {name: _REQUIRED_EXAMPLES.get((section, name), REQUIRED) if option.required
            else option.default
            for name, option in spec.options.items() if every_option or option.required}


def slim_template(section, spec):
    """A minimal slim config that loads, with every option of `spec` (a part of `section`) at
    its default, and the parts it needs (a strategy's pruner, the compressor) at their required
    options only."""
    specs = config_class_specs()
    entries = []  # (section, spec, every option?)
    if section in ("pruners", "strategies"):
        pruner = spec if section == "pruners" else next(
            part_spec for part, part_spec in specs.values() if part == "pruners")
        entries.append(("pruners", pruner, section == "pruners"))
    if section == "strategies":
        entries.append(("strategies", spec, True))
    entries.append(("compressor", specs["compressor"][1], section == "compressor"))
    lines = [f"version: {SUPPORTED_VERSIONS[0]}"]
    for part, part_spec, every_option in entries:
        values = _slim_entry_values(part, part_spec, every_option)
        lines.append(f"{part}:")
        if part == "compressor":
            if section == "strategies":  # the compressor runs the strategies it lists
                values["strategies"] = [_TEMPLATE_NAMES["strategies"]]
            lines += _slim_entry_lines(part, part_spec, values, 2)
        else:
            lines.append(f"  {_TEMPLATE_NAMES[part]}:")
            lines += _slim_entry_lines(part, part_spec, values, 4)
    return "\n".join(lines)


def help_slim_class(name, section, spec):
    """Text of `help NAME` for a slim-config class: description, options and a slim config."""
    where = ("the compressor block of a slim config" if section == "compressor"
             else f"slim config: an entry of `{section}` with class: {name}")
    parts = [f"{name} ({where})", "", "DESCRIPTION",
             textwrap.indent(spec.doc or "(undocumented)", "  "), "", "OPTIONS"]
    parts += _format_table(_option_rows(spec), ("option", "type", "default", "description")) or [
        "  (no options)"]
    parts += ["", "SLIM CONFIG TEMPLATE (-s/--slim_file; required values are examples)",
              slim_template(section, spec), "",
              "COMMAND LINE OPTIONS", "  none: -o overrides the detection config; edit the slim config"]
    return "\n".join(parts)


def generate_modules(names):
    """Text of `generate NAME...`: a YAML config with each module's section at its defaults."""
    slim_classes = config_class_specs()
    for name in names:
        if name in slim_classes:
            raise ConfigError(f"'{name}' is part of the slim config, not a detection config module; "
                              f"python -m slim.config help {name} prints a slim config with it")
    specs = [REGISTRY.get(name) for name in names]
    return "\n\n".join(module_template(spec) for spec in specs)


def analyze_config(path, overrides=()):
    """Text of `analyze FILE`: the loaded config, values that differ from defaults marked."""
    cfg = load_config(path, overrides)
    lines = [f"# {shorten(path)}" + (" with -o " + " ".join(shorten(item) for item in overrides)
                                      if overrides else ""),
             "# '# default: X' marks a value that differs from the default"]
    top_defaults = {name: option.default for name, option in TOP_LEVEL.options.items()}
    top_values = {key: cfg[key] for key in TOP_LEVEL.options}
    top_lines = render_mapping_lines(top_values, top_defaults, 0, option_types(TOP_LEVEL),
                                     mark_changes=True)
    lines += top_lines
    changed = sum(1 for line in top_lines if "# default:" in line)
    for name, section in cfg.items():
        if name in TOP_LEVEL.options:
            continue
        spec = REGISTRY.get(name)
        defaults = {n: option.default for n, option in spec.options.items()}
        lines.append("")
        lines.append(f"{name}:")
        section_lines = render_mapping_lines(section, defaults, 2, option_types(spec),
                                             mark_changes=True)
        changed += sum(1 for line in section_lines if "# default:" in line)
        lines += section_lines
    unconfigured = [name for name in _modules_used(cfg) if name not in cfg]
    lines.append("")
    if unconfigured:
        lines.append(f"# used with all defaults (no section): {', '.join(unconfigured)}")
    lines.append(f"# {changed} value(s) differ from defaults")
    return "\n".join(lines)


def _modules_used(cfg):
    """Modules the config uses: architecture, feeds, and the modules they inject, in order."""
    queue = [cfg[key] for key in ("architecture", "train_feed", "eval_feed", "test_feed")
             if cfg.get(key)]
    used = []
    while queue:
        name = queue.pop(0)
        if name in used or name not in REGISTRY:
            continue
        used.append(name)
        spec = REGISTRY.get(name)
        section = cfg.get(name) or {}
        for option in spec.inject:
            value = section.get(option, spec.options[option].default)
            if isinstance(value, str):
                queue.append(value)
    return used


def build_parser():
    """The argparse parser of `python -m slim.config`."""
    parser = ArgumentParser(
        prog="python -m slim.config",
        description="Inspect config modules and check detection configs.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list top-level keys and all modules")
    help_parser = commands.add_parser("help", help="describe a module: options, template, -o lines")
    help_parser.add_argument("module")
    generate_parser = commands.add_parser(
        "generate", help="print a YAML config of modules' defaults, or (--dataset_dir) a "
                         "detection config started from a VOC-format dataset dir")
    generate_parser.add_argument("modules", nargs="*")
    generate_parser.add_argument("--dataset_dir", default=None, metavar="DIR",
                                 help="start a detection config for this dataset: classes from its "
                                      "label_list, anchors fitted to its boxes, its sizes")
    generate_parser.add_argument("--base", default=None, metavar="CONFIG",
                                 help="the config to start from (default: the demo's, "
                                      "configs/yolov3_mobilenet_v1_demo.yml)")
    generate_parser.add_argument("--size", type=int, default=None,
                                 help="train input size in px (default: the base config's)")
    generate_parser.add_argument("--train_list", default="train.txt")
    generate_parser.add_argument("--test_list", default="test.txt")
    generate_parser.add_argument("--label_list", default="label_list.txt")
    generate_parser.add_argument("--out", default=None, metavar="FILE.yml",
                                 help="write the config there (default: print it)")
    analyze_parser = commands.add_parser("analyze", help="load a config and mark non-default values")
    analyze_parser.add_argument("file")
    analyze_parser.add_argument("-o", "--opt", nargs="+", action="extend", default=[],
                                metavar="KEY=VALUE", help="override config values")
    return parser


@exit_on_user_error
def main(argv=None, dataset_config=None):
    """Entry point of `python -m slim.config`. `dataset_config(args)` -> (YAML text, note)
    serves `generate --dataset_dir` (it reads a dataset: slim.data, a layer above this one,
    so slim/config/__main__.py passes it in)."""
    args = build_parser().parse_args(argv)
    import_module_packages()
    if args.command == "list":
        text = list_modules()
    elif args.command == "help":
        text = help_module(args.module)
    elif args.command == "generate" and args.dataset_dir is not None:
        if args.modules:
            raise ConfigError("generate: give module names or --dataset_dir, not both")
        if dataset_config is None:
            raise ConfigError("generate --dataset_dir: run it as python -m slim.config")
        text, note = dataset_config(args)
        if args.out is not None:
            sys.stderr.write(note + "\n")
            return 0
    elif args.command == "generate":
        if not args.modules:
            raise ConfigError("generate: name the modules (e.g. YOLOv3 MobileNet YOLOv3Head) or "
                              "give --dataset_dir DIR")
        text = generate_modules(args.modules)
    else:
        text = analyze_config(args.file, args.opt)
    sys.stdout.write(text + "\n")
    return 0
