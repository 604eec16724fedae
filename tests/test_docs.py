"""The docs stay true: every relative link and anchor resolves, every documented train.py / evaluate.py command
passes the project's config check (and composes, where it is one run), and every config key the docs name
exists in the config files or is an option of a block."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attn_resnet.attention_registry import BLOCKS, declared_block
from attn_resnet.commands.hydra_app import block_option_overrides
from attn_resnet.config.command_line import check_overrides

from helpers import CONF, REPO, compose_train

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
GROUPS = ("model", "data", "optim", "sched", "trainer", "aug")


def _prose(text: str) -> str:
    """``text`` with its fenced code blocks kept (commands live there) but HTML comments removed."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"`", "", title.strip().lower())
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def _links(path: Path):
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for label, target in re.findall(r"\[([^\]]*)\]\(([^)\s]+)\)", line):
            if not target.startswith(("http://", "https://", "mailto:")):
                yield label, target


def test_every_relative_link_and_anchor_resolves():
    broken = []
    checked = 0
    for page in PAGES:
        for label, target in _links(page):
            file, _, anchor = target.partition("#")
            destination = (page.parent / file).resolve() if file else page
            checked += 1
            if not destination.exists():
                broken.append(f"{page.relative_to(REPO)}: [{label}]({target}): no such file")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{page.relative_to(REPO)}: [{label}]({target}): no heading #{anchor}")
    assert not broken, "\n".join(broken)
    assert checked > 60


def _commands():
    """``(page, entry, args, line)`` of each ``python train.py ...`` / ``evaluate.py ...`` in the docs."""
    for page in PAGES:
        text = _prose(page.read_text()).replace("\\\n", " ")
        pattern = r"(?:python|torchrun[^\n]*?|attn-resnet)\s+(train|evaluate)(?:\.py)?\s([^\n`|]*)"
        for match in re.finditer(pattern, text):
            try:
                words = shlex.split(match.group(2).split(" #")[0])
            except ValueError:  # a quote opened in prose and closed on another line
                continue
            # Placeholders of the prose (<time>, [key=value ...], ...) are not arguments.
            args = [word for word in words if not word.startswith(("<", "[", "$")) and "..." not in word
                    and "<" not in word.split("=", 1)[0]]
            yield page, match.group(1), args, match.group(0)


def test_every_documented_command_passes_the_config_check_and_composes():
    checked = composed = 0
    failures = []
    for page, entry, args, line in _commands():
        if any(arg.startswith("hydra.searchpath=") for arg in args):
            continue  # a user's own config folder (mypkg/conf), which exists only on the user's machine
        try:
            check_overrides([f"{entry}.py", *args], entry, CONF)
        except Exception as error:  # noqa: BLE001 - collected, then reported together
            failures.append(f"{page.relative_to(REPO)}: {line.strip()}\n    {error}")
            continue
        checked += 1
        overrides = [arg for arg in args if "=" in arg and not arg.startswith("-")]
        one_run = not any(arg.startswith("-") for arg in args) and not any(
            re.search(r"=[^=]*,", arg) and not arg.startswith(("hydra.", "+hydra.", "data.classes=", "data.mean=",
                                                                  "data.std=", "data.image_size=", "data.crop_scale="))
            for arg in overrides)
        placeholder = any("<" in arg or arg.endswith("=PATH") for arg in overrides)
        if entry == "train" and one_run and not placeholder and not any(
                arg.startswith(("hydra.", "+callbacks", "callbacks.")) for arg in overrides):
            try:  # as train.py hands them to Hydra: a block's options become additions
                compose_train(block_option_overrides(["train.py", *overrides], CONF)[1:])
            except Exception as error:  # noqa: BLE001
                failures.append(f"{page.relative_to(REPO)}: {line.strip()} (Hydra)\n    {error}")
                continue
            composed += 1
    assert not failures, "\n".join(failures)
    assert checked > 40 and composed > 20, (checked, composed)


def _declared_keys() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {group: set() for group in GROUPS}
    for group in GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            keys[group] |= {str(key) for key in OmegaConf.load(path) if key != "defaults"}
    for path in (CONF / "experiment").glob("*.yaml"):  # experiments may add keys of their own
        for group, node in OmegaConf.load(path).items():
            if group in keys and hasattr(node, "keys"):
                keys[group] |= {str(key) for key in node.keys()}
    for name in BLOCKS:
        keys["model"] |= set(getattr(declared_block(name), "options", {}))
    return keys


def test_every_config_key_the_docs_name_exists():
    keys = _declared_keys()
    from attn_resnet.data import DATASET_BUILDERS
    from attn_resnet.registry import RegistryError

    import inspect

    for name in DATASET_BUILDERS:  # a dataset's builder options are its data.* keys
        try:
            keys["data"] |= set(inspect.signature(DATASET_BUILDERS[name]).parameters)
        except RegistryError:
            continue
    # The docs' own examples of keys that are refused (the error messages they show).
    refused = {("trainer", "mixup"), ("model", "att"), ("trainer", "epoch"), ("trainer", "lr"), ("model", "arangement"),
               ("trainer", "tensorboard")}  # replaced by the logger group (docs/logging.md)
    unknown = []
    for page in PAGES:
        # A key, not a module or a method: not followed by "." or "(" (data.common.data_info, model.train()).
        pattern = r"`[+~]*(model|data|optim|sched|trainer|aug)\.([a-z_0-9]+)(?![.(\w])"
        for group, key in re.findall(pattern, page.read_text()):
            if key not in keys[group] and (group, key) not in refused:
                unknown.append(f"{page.relative_to(REPO)}: {group}.{key}")
    assert not unknown, "\n".join(sorted(set(unknown)))


@pytest.mark.parametrize("bad, message", [("[x](missing.md)", "no such file"), ("[x](#nowhere)", "no heading")])
def test_the_link_check_catches_a_broken_link(tmp_path, bad, message):
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\nSee {bad}.\n")
    broken = []
    for label, target in _links(page):
        file, _, anchor = target.partition("#")
        destination = (page.parent / file) if file else page
        if not destination.exists():
            broken.append("no such file")
        elif anchor and anchor not in _anchors(destination):
            broken.append("no heading")
    assert broken == [message]


def test_the_readme_keeps_its_two_commands_and_says_how_to_install_the_cpu_only_build():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    install = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1"
    assert blocks[0].startswith(install) and blocks[0].strip().endswith("python train.py experiment=digits")
    marker = readme.index("<!-- ci: test command -->")
    assert readme.index(blocks[1]) > marker and blocks[1].startswith(install)  # the command CI runs
    cpu = next(block for block in blocks if "download.pytorch.org/whl/cpu" in block)
    assert "torch==2.14.1 torchvision==0.29.1" in cpu  # the same versions, from PyTorch's CPU-only index
    assert len(readme.splitlines()) < 200  # a five-minute read; the reference lives in docs/
