"""What the command says about itself (issue 11, item 8): its version, and a help
text for every flag of the commands a field engineer starts with."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest

from jetsplit.cli import main as jetsplit


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_installed_one(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert jetsplit([flag]) == 0
    assert capsys.readouterr().out == f"jetsplit {version('jetsplit')}\n"


@pytest.mark.parametrize("argv", [["edge", "run", "--help"], ["plan", "--help"], ["cloud", "serve", "--help"]])
def test_every_flag_has_a_help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        jetsplit(argv)
    assert done.value.code == 0
    text = capsys.readouterr().out
    options = text[text.index("options:"):]
    # argparse puts a flag's help after two spaces on its line, or on the lines below.
    bare = []
    for entry in re.split(r"\n  (?=-)", options)[1:]:
        first, *rest = entry.rstrip("\n").split("\n")
        if not (re.search(r"\S\s{2,}\S", first.strip()) or any(line.strip() for line in rest)):
            bare.append(first.split()[0])
    assert bare == [], f"flags without help in {' '.join(argv)}: {bare}"
