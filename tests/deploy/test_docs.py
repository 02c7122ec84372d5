"""The README and docs/: the site builds in strict mode (a broken link or page fails), the
README stays a front door, and what the pages tell a reader to run or open exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, documentation

MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]
# Paths the docs name that a run creates, not the repository.
GENERATED_ROOTS = ("results/", "models", "site/", "gpu-bundle")


def mkdocs(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "-f", str(root / "mkdocs.yml"), "-d", str(site)],
        cwd=root,  # the snippets' base path
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_in_strict_mode(tmp_path):
    result = mkdocs(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "loadtest" / "index.html").is_file()


def test_a_broken_link_or_missing_generated_table_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copytree(ROOT / "docs", copy / "docs", dirs_exist_ok=True)
    assert mkdocs(copy, tmp_path / "ok").returncode == 0
    page = copy / "docs" / "serving.md"
    page.write_text(page.read_text() + "\nSee [the limits](limits.md).\n")
    broken = mkdocs(copy, tmp_path / "broken")
    assert broken.returncode != 0 and "limits.md" in broken.stderr
    page.write_text(page.read_text().replace("See [the limits](limits.md).", ""))
    (copy / "docs" / "generated").mkdir(exist_ok=True)
    page.write_text(page.read_text() + '\n--8<-- "docs/generated/absent.md"\n')
    missing = mkdocs(copy, tmp_path / "missing")
    assert missing.returncode != 0 and "absent.md" in missing.stderr


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for command in ("make serve", "make benchmark", "make test", "curl"):
        assert command in readme, command
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme):
        assert (ROOT / link).is_file(), link
    for example in re.findall(r"@(examples/[\w.-]+)", readme):
        assert 0 < (ROOT / example).stat().st_size <= 32 * 1024, example


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.MULTILINE))


def densenet_commands() -> set[str]:
    text = (ROOT / "service" / "cli.py").read_text()
    return set(re.findall(r'sub\.add_parser\(\s*"([a-z]+)"', text))


DOCS = documentation()


def test_every_make_target_the_docs_name_exists():
    # In code: inline spans and the commands of shell blocks, not prose.
    blocks = DOCS.split("```")[1::2]
    commands = [line.split("#")[0] for block in blocks for line in block.splitlines()]
    code = re.findall(r"`([^`\n]+)`", DOCS) + commands
    named = {m for c in code for m in re.findall(r"(?<![\w-])make ((?:[a-z][a-z-]* ?)+)", c)}
    targets = {t for group in named for t in group.split()}
    assert {"benchmark", "test", "serve"} <= targets, "the pattern is broken"
    assert targets <= make_targets(), sorted(targets - make_targets())


def test_every_densenet_command_the_docs_name_exists():
    named = set(re.findall(r"`densenet ([a-z]+)", DOCS)) | set(
        re.findall(r"^\s*densenet ([a-z]+)", DOCS, re.MULTILINE)
    )
    assert {"build", "serve", "bench"} <= named
    assert named <= densenet_commands(), sorted(named - densenet_commands())


@pytest.mark.parametrize("prefix", ["service", "tests", "loadtest", "k8s", "monitoring", "scripts"])
def test_every_repository_file_the_docs_name_exists(prefix):
    named = set(re.findall(rf"`({prefix}[\w-]*/[\w./-]*)`", DOCS))
    named = {n.split(" ")[0].rstrip(".") for n in named if "*" not in n and "<" not in n}
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
