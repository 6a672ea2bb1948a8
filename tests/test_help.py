"""What a user reads in --help: every option explained with its default, examples at the end,
and only words a user knows (nothing about where the project came from)."""

from __future__ import annotations

import argparse
import re

import pytest

from rawfin.cli import EXAMPLES, build_parser

PARSER = build_parser()
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("name", sorted(SUB.choices))
def test_every_option_has_help_with_its_default(name):
    sp = SUB.choices[name]
    for a in sp._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        what = a.option_strings or a.dest
        assert a.help, f"rawfin {name} {what}: no help"
        if a.default not in (None, False, [], argparse.SUPPRESS) and a.option_strings:
            assert "default" in a.help, f"rawfin {name} {what}: help does not say the default ({a.default!r})"


@pytest.mark.parametrize("name", sorted(SUB.choices))
def test_help_ends_with_examples_in_words_a_user_knows(name):
    text = SUB.choices[name].format_help()
    tail = text.rstrip("\n").split("\nexamples:\n")
    assert len(tail) == 2, f"rawfin {name} --help has no examples"
    lines = [ln for ln in tail[1].splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 3 and all(ln.startswith("  ") and "rawfin" in ln for ln in lines)
    assert len(EXAMPLES[name]) == len(lines)
    assert not re.search(r"\bseed's\b|\bthe seed\b", text, re.I), f"rawfin {name} --help"
