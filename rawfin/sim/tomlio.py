"""TOML for scenario files: reading (``tomllib``, or ``tomli`` on Python 3.10) and writing strings.

rawfin reads TOML with the standard library's parser from 3.11 on and with ``tomli``
(the same parser, a declared dependency on 3.10) before. It writes TOML only as
text it puts together itself (``rawfin replay --export scenario``); every string in
it goes through :func:`basic_string`, so whatever a value holds (a newline in a
path, a quote, a control character) the file reads back to the same value.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib as _parser
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as _parser

TOMLDecodeError = _parser.TOMLDecodeError

# the escapes TOML gives names to; every other control character is written \uXXXX
_NAMED = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def loads(text: str) -> dict:
    """The document in ``text`` (raises :data:`TOMLDecodeError`)."""
    return _parser.loads(text)


def basic_string(s: str) -> str:
    """``s`` as a TOML basic string, quotes included, that reads back as ``s``.

    TOML forbids the control characters U+0000..U+001F and U+007F unescaped in a
    basic string, and a quote or backslash ends or starts an escape: those are
    escaped, everything else is written as it is. A lone surrogate (an undecodable
    byte of a file name, as Python's ``surrogateescape`` keeps it) has no TOML
    spelling: one that stands for an undecodable byte is written as the text ``\\xNN``
    of that byte, any other as U+FFFD.
    """
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else "\\uFFFD")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


__all__ = ["loads", "basic_string", "TOMLDecodeError"]
