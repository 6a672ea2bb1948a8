"""TOML as rawfin writes it: every string reads back as itself (rawfin.sim.tomlio)."""

from __future__ import annotations

import os
import shutil

from hypothesis import given
from hypothesis import strategies as st

from rawfin.sim import scenarios, tomlio
from rawfin.sim.replay import scenario_toml
from rawfin.commands.replay import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@given(st.text())
def test_every_string_reads_back(s):
    assert tomlio.loads(f"x = {tomlio.basic_string(s)}\n") == {"x": s}


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_every_control_character_is_escaped(s):
    text = tomlio.basic_string(s)
    assert "\n" not in text and not any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in text)


def test_named_escapes_and_an_undecodable_byte():
    assert tomlio.basic_string('a"b\\c\nd\te\x00\x7f') == '"a\\"b\\\\c\\nd\\te\\u0000\\u007F"'
    raw = os.fsdecode(b"cap\xff.pcap")          # a file name that is not UTF-8
    assert tomlio.loads(f"x = {tomlio.basic_string(raw)}") == {"x": "cap\\xff.pcap"}


def test_export_of_a_capture_whose_name_has_a_newline_and_quotes(tmp_path):
    src = tmp_path / 'odd "name"\nwith \\ and \x01.pcap'
    shutil.copy(os.path.join(ROOT, "captures", "lost-final-ack.pcap"), src)
    f = tmp_path / "s.toml"
    f.write_text(scenario_toml(load(str(src))), encoding="utf-8")
    scn = scenarios.load(str(f))
    assert scn.summary == f"replayed from {src}, connection 0"
    assert str(src) in scn.description
    assert scn.client.address == "192.0.2.2" and scn.server.port == 80
