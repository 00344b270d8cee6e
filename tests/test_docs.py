"""Documented commands are tests (issue #22): every fenced block of README.md and docs/*.md.

docs/README.md defines the convention. Each block's info string says what it is:
```` ```bash run [exit=N] ```` blocks are run here, ```` ```bash norun: REASON ```` blocks are
shown only (the reason says why), ```` ```text ````/console/yaml/python/json blocks are
synopses, output or file contents. A block with no info string, or a shell block without
run/norun, fails `test_every_block_is_marked`.

`run` blocks run with bash (`set -euo pipefail`, so an unset placeholder fails too) from a
scratch workspace that looks like the repository root (configs/, the entry points and slim/
linked in, a tiny demo dataset in dataset/demo), on PATH the test's own python. The
placeholders `${checkpoint_path}` and `${epoch}` name the last checkpoint of one tiny
compress.py run on the demo configs (docs/compress.md's own block, run once per session).
A block fails on an exit code other than 0 (or its declared exit=N) and on a Python
traceback in its output.

The examples of the `python -m slim COMMAND --help` texts (the lines under "Example:") run
the same way.
"""
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
from session_cache import cached_in_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md", *sorted(os.path.relpath(path, ROOT)
                                  for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# What the workspace links from the repository (read by the commands, never written).
LINKED = ("configs", "slim", "bench", "train.py", "compress.py", "eval.py", "infer.py")
SHELLS = ("bash", "sh", "shell", "zsh")
NOT_COMMANDS = ("text", "console", "yaml", "python", "json", "markdown", "dot")
FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
RUN_INFO = re.compile(r"^bash run(?: exit=(\d+))?$")
NORUN_INFO = re.compile(r"^bash norun: \S.*$")
BLOCK_TIMEOUT = 300
# The session's compress.py run that fills ${checkpoint_path} and ${epoch}: docs/compress.md's
# demo-sized block (run once, first; its own test then checks what it left).
PLACEHOLDER_PAGE = os.path.join("docs", "compress.md")
PLACEHOLDER_COMMAND = "compress.py -s configs/yolov3_mobilenet_v1_demo_slim.yaml"
PLACEHOLDER_CHECKPOINT_PATH = os.path.join("output", "demo_checkpoints")
# Subcommands whose help examples are not run, and why.
HELP_NOT_RUN = {"demo": "the whole demo (about 10 minutes); make demo runs it"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: file, first line number, info string, text."""
    path: str
    line: int
    info: str
    text: str

    @property
    def name(self):
        return f"{self.path}:{self.line}"

    @property
    def runs(self):
        return RUN_INFO.match(self.info) is not None

    @property
    def expected_exit(self):
        match = RUN_INFO.match(self.info)
        return int(match.group(1) or 0)


def fenced_blocks(path):
    """The fenced blocks of the markdown file `path` (relative to ROOT), in order; a
    ValueError for a fence that is never closed."""
    blocks, opened = [], None
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            match = FENCE.match(line.rstrip("\n"))
            if opened is None:
                if match:
                    opened = (number, match.group(1), match.group(2).strip(), [])
            elif match and match.group(1).startswith(opened[1]) and not match.group(2).strip():
                blocks.append(Block(path, opened[0], opened[2], "".join(opened[3])))
                opened = None
            else:
                opened[3].append(line)
    if opened is not None:
        raise ValueError(f"{path}:{opened[0]}: fence never closed")
    return blocks


def block_problem(block):
    """Why `block`'s info string breaks docs/README.md's convention (None if it keeps it)."""
    info = block.info
    if not info:
        return "no info string (bash run / bash norun: REASON / text / console / yaml / python)"
    word = info.split()[0].rstrip(":")
    if word in SHELLS:
        if RUN_INFO.match(info) or NORUN_INFO.match(info):
            return None
        return f"shell block '{info}': mark it 'bash run [exit=N]' or 'bash norun: REASON'"
    if word in NOT_COMMANDS:
        if "$ " in block.text.split("\n", 1)[0] and word != "console":
            return f"'{info}' block starts with a shell prompt: a console or bash block?"
        return None
    return f"unknown info string '{info}'"


def all_blocks():
    return [block for path in DOC_FILES for block in fenced_blocks(path)]


def test_every_block_is_marked():
    blocks = all_blocks()
    assert len(blocks) >= 15  # the parser found the docs' blocks
    problems = [f"{block.name}: {block_problem(block)}" for block in blocks
                if block_problem(block)]
    assert not problems, "\n".join(problems)


def test_the_marker_check_refuses_unmarked_blocks():
    assert block_problem(Block("x.md", 1, "", "make demo\n"))
    assert block_problem(Block("x.md", 1, "bash", "make demo\n"))
    assert block_problem(Block("x.md", 1, "bash norun:", "make demo\n"))
    assert block_problem(Block("x.md", 1, "sh run", "make demo\n"))
    assert block_problem(Block("x.md", 1, "bash run exit=two", "make demo\n"))
    assert block_problem(Block("x.md", 1, "bash run", "x\n")) is None
    assert block_problem(Block("x.md", 1, "bash run exit=2", "x\n")) is None
    assert block_problem(Block("x.md", 1, "bash norun: needs VOC", "x\n")) is None


def test_fences_parse(tmp_path):
    text = "a\n```bash run\necho 1\n```\n\n````text\n```\nnested\n````\n```\nbare\n```\n"
    (tmp_path / "doc.md").write_text(text)
    blocks = fenced_blocks(str(tmp_path / "doc.md"))
    assert [(b.line, b.info, b.text) for b in blocks] == [
        (2, "bash run", "echo 1\n"), (6, "text", "```\nnested\n"), (10, "", "bare\n")]


def _environment(workspace, placeholders):
    env = dict(os.environ, **placeholders)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(GLOG_minloglevel="2", OMP_NUM_THREADS="2", HOME=os.environ.get("HOME", workspace))
    return env


def make_workspace(root):
    """A directory that looks like the repository root to the documented commands."""
    os.makedirs(root, exist_ok=True)
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), os.path.join(root, name))
    subprocess.run([sys.executable, "-m", "slim.data.demo", "--out",
                    os.path.join(root, "dataset", "demo"), "--train", "8", "--test", "4"],
                   check=True, capture_output=True, env=_environment(root, {}))
    return root


def _build_docs_workspace(root):
    workspace = make_workspace(os.path.join(root, "repo"))
    run_shell(placeholder_block().text, workspace, {}, where=placeholder_block().name)
    checkpoint_path = os.path.join(workspace, PLACEHOLDER_CHECKPOINT_PATH)
    epochs = sorted(int(name) for name in os.listdir(checkpoint_path) if name.isdigit())
    assert epochs, os.listdir(checkpoint_path)
    return {"workspace": workspace,
            "placeholders": {"checkpoint_path": checkpoint_path, "epoch": str(epochs[-1])}}


def placeholder_block():
    """docs/compress.md's demo-sized compress.py run: the one block whose checkpoints fill
    the placeholders of the others."""
    matches = [block for block in fenced_blocks(PLACEHOLDER_PAGE)
               if block.runs and PLACEHOLDER_COMMAND in block.text]
    assert len(matches) == 1, f"{PLACEHOLDER_PAGE}: {len(matches)} run blocks with {PLACEHOLDER_COMMAND}"
    return matches[0]


@pytest.fixture(scope="module")
def docs_workspace(tmp_path_factory):
    """The workspace and the placeholders' values (the tiny compress run, once a session)."""
    return cached_in_session(tmp_path_factory, "docs_workspace", _build_docs_workspace)


def run_shell(text, workspace, placeholders, expected_exit=0, where="block"):
    """Run `text` with bash in `workspace`; assert its exit code and no traceback."""
    script = "set -euo pipefail\n" + text
    result = subprocess.run(["bash", "-c", script], cwd=workspace,
                            env=_environment(workspace, placeholders), capture_output=True,
                            text=True, timeout=BLOCK_TIMEOUT)
    output = result.stdout + result.stderr
    assert "Traceback (most recent call last)" not in output, f"{where}:\n{output[-4000:]}"
    assert result.returncode == expected_exit, (
        f"{where}: exit {result.returncode}, expected {expected_exit}\n{text}\n{output[-4000:]}")
    return result


RUN_BLOCKS = [block for block in all_blocks() if block.runs]


def test_there_are_runnable_blocks():
    pages = {block.path for block in RUN_BLOCKS}
    assert len(RUN_BLOCKS) >= 8 and len(pages) >= 5, sorted(pages)


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[block.name for block in RUN_BLOCKS])
def test_run_block(block, docs_workspace):
    if block == placeholder_block():  # ran when the workspace was built; what it left:
        checkpoint = os.path.join(docs_workspace["placeholders"]["checkpoint_path"],
                                  docs_workspace["placeholders"]["epoch"])
        assert os.path.isfile(os.path.join(checkpoint, "eval_model", "__model__.infer"))
        return
    run_shell(block.text, docs_workspace["workspace"], docs_workspace["placeholders"],
              block.expected_exit, where=block.name)


def help_examples(text):
    """The commands under 'Example...:' / 'Examples...:' in a help text: indented lines starting
    with 'python ' (a trailing backslash continues one onto the next line)."""
    examples, in_examples, current = [], False, None
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"^Examples?\b.*:$", stripped):
            in_examples = True
            continue
        if not in_examples:
            continue
        if current is not None:
            current += " " + stripped.rstrip("\\").strip()
            if not stripped.endswith("\\"):
                examples.append(current)
                current = None
            continue
        if stripped.startswith("python "):
            if stripped.endswith("\\"):
                current = stripped.rstrip("\\").strip()
            else:
                examples.append(stripped)
        elif stripped and not line.startswith(" "):
            in_examples = False
    return examples


def test_help_examples_parse():
    text = ("usage: x\n\nExamples:\n    python -m slim a \\\n        --b c\n"
            "    python -m slim d   # e\n\noptions:\n  python not this\n")
    assert help_examples(text) == ["python -m slim a --b c", "python -m slim d   # e"]


def _help_text(command):
    result = subprocess.run([sys.executable, "-m", "slim", command, "--help"], cwd=ROOT,
                            env=_environment(ROOT, {}), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _subcommands():
    from slim.__main__ import SUBCOMMANDS
    return [name for name in SUBCOMMANDS if name not in HELP_NOT_RUN]


@pytest.mark.parametrize("command", _subcommands())
def test_help_examples_run(command, docs_workspace):
    examples = help_examples(_help_text(command))
    assert examples, f"python -m slim {command} --help has no 'Example:' section"
    for example in examples:
        run_shell(example, docs_workspace["workspace"], docs_workspace["placeholders"],
                  where=f"python -m slim {command} --help: {example}")


def _linked_files_git_does_not_track():
    """Untracked or ignored files under the linked paths (byte code aside), as git lists them;
    None outside a git checkout."""
    listing = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all",
                              "--", *LINKED], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        return None
    return {line[3:] for line in listing.stdout.splitlines()
            if line[:2] in ("??", "!!") and "__pycache__" not in line}


STRAY_FILES_BEFORE = _linked_files_git_does_not_track()  # at collection, before any test ran


def test_workspace_links_stay_links(docs_workspace):
    """The commands wrote nothing into the repository through the links."""
    workspace = docs_workspace["workspace"]
    for name in LINKED:
        assert os.path.islink(os.path.join(workspace, name)), name
    if STRAY_FILES_BEFORE is None:
        pytest.skip("not a git checkout: cannot list the files written into the repository")
    assert _linked_files_git_does_not_track() - STRAY_FILES_BEFORE == set()
    shutil.disk_usage(workspace)  # the workspace exists
