"""Plain-text tables that fit the terminal.

One small layout, used by every table rawfin prints in its default style (tabulate's
``simple`` look: columns left-aligned, two spaces apart, a dashed rule under the
headers, no trailing blanks), and written again in C by the compiled lane's writer
(``rawfin/capture/lane/writer.c``), which must give the same characters:

* **width** (:func:`terminal_width`): ``COLUMNS`` when it is set, else the terminal's
  width when the output is a terminal, else 100 columns;
* **column widths**: each column is as wide as its widest cell and at least its header
  plus two (as tabulate has it); when the row is wider than the width, the columns first
  give up the headers' padding, then the columns of free text that wrap well (a cause, a
  file name), then the widest column gives up one character at a time (the rightmost of
  equals first), never below its header (:func:`fit`);
* **rows end at their last character** (trailing spaces are dropped);
* **cells too wide for their column wrap** (:func:`wrap`) onto more lines of the same row:
  at spaces, greedily, and a word longer than the column is cut. Nothing is shortened
  away: every character of every cell is printed;
* **a newline in a header or a cell** starts a line of its own there when the table asks
  for it (``lines=True``: headers on several lines, a cell of two lines); elsewhere (the
  compiled writer's tables) it is a character like any other.

Widths count characters (code points), as Python's ``len`` does.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Sequence

DEFAULT_WIDTH = 100
#: below this a layout is not worth keeping (COLUMNS=5): rawfin lays out for this many
MIN_WIDTH = 40
GAP = "  "


def terminal_width(stream: IO[str] | None = None) -> int:
    """The width tables are laid out for: ``COLUMNS``, else the terminal's, else 100."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return max(MIN_WIDTH, int(env))
    stream = stream if stream is not None else sys.stdout
    try:
        if stream.isatty():
            return max(MIN_WIDTH, os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH)
    except (AttributeError, OSError, ValueError):
        pass
    return DEFAULT_WIDTH


#: where a word too long for a line is best cut: after one of these (an address at its port)
CUT_AFTER = ":/.,;=_-"


def _cut(word: str, room: int) -> int:
    """How much of ``word`` goes on a line of ``room`` characters: up to the last of CUT_AFTER
    that fits, else ``room``."""
    for i in range(room - 1, 0, -1):
        if word[i] in CUT_AFTER:
            return i + 1
    return room


def wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    """``text`` in lines of at most ``width`` characters, ``first`` before the first line and
    ``rest`` before the others (both counted in the width).

    Text that fits is returned as it is. Otherwise it is cut at runs of spaces and filled
    greedily; a word longer than a whole line is cut after the last of ``CUT_AFTER`` that
    fits (``[2001:db8::1]:`` then ``443``), or where the line ends.
    """
    if len(first) + len(text) <= width:
        return [first + text]
    lines: list[str] = []
    prefix = first
    line = ""
    for word in text.split(" "):
        if not word:
            continue
        room = max(1, width - len(prefix))
        if line and len(line) + 1 + len(word) <= room:
            line += " " + word
            continue
        if line:
            lines.append(prefix + line)
            prefix = rest
            room = max(1, width - len(prefix))
        while len(word) > room:
            cut = _cut(word, room)
            lines.append(prefix + word[:cut])
            word = word[cut:]
            prefix = rest
            room = max(1, width - len(prefix))
        line = word
    lines.append(prefix + line)
    return lines


#: a column that wraps first gives up width down to this before the others give up any
WRAP_FIRST_FLOOR = 12


def fit(widths: Sequence[int], soft: Sequence[int], mins: Sequence[int], total: int,
        first: Sequence[int] = ()) -> list[int]:
    """Column widths that fit ``total`` characters with two spaces between columns.

    First the columns give up what they have beyond ``soft`` (the headers' padding), left to
    right; then the columns in ``first`` (free text that wraps well), the widest of them first,
    down to ``WRAP_FIRST_FLOOR``; then every column, the widest first (the rightmost of equals),
    one character at a time, never below its ``mins``.
    """
    w = list(widths)
    excess = sum(w) + len(GAP) * (len(w) - 1) - total
    for i in range(len(w)):
        if excess <= 0:
            break
        take = min(w[i] - soft[i], excess)
        if take > 0:
            w[i] -= take
            excess -= take
    for cols, floor in ((first, WRAP_FIRST_FLOOR), (range(len(w)), 0)):
        while excess > 0:
            best = -1
            for i in cols:
                if w[i] > max(mins[i], floor) and (best < 0 or w[i] >= w[best]):
                    best = i
            if best < 0:
                break
            w[best] -= 1
            excess -= 1
    return w


class Layout:
    """The column widths of one table: from its headers and some rows, fitted to a width."""

    __slots__ = ("headers", "widths", "mins", "lines")

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[str]], width: int,
                 first: Sequence[int] = (), lines: bool = False) -> None:
        self.headers = list(headers)
        self.lines = lines
        if not lines:                       # analyze's tables: a newline is a character like any other
            _widest, _wrap_cell = len, _wrap_plain
        else:
            _widest, _wrap_cell = _widest_line, _wrap_lines
        mins = [_widest(h) for h in headers]
        soft = list(mins)                   # the widest cell (or the header)
        for row in rows:
            for i, cell in enumerate(row):
                n = _widest(cell)
                if n > soft[i]:
                    soft[i] = n
        natural = [max(s, m + 2) for s, m in zip(soft, mins)]
        fitted = fit(natural, soft, mins, width, first)
        # what the cells need once wrapped to the fitted widths (a wrapped column may need less)
        need = [min(m + 2, f) for m, f in zip(mins, fitted)]
        for row in rows:
            for i, cell in enumerate(row):
                n = _widest(cell)
                if n > fitted[i]:
                    n = max(len(x) for x in _wrap_cell(cell, fitted[i]))
                if n > need[i]:
                    need[i] = n
        self.mins = mins
        self.widths = need

    def head(self) -> str:
        widths = self.widths
        heads = [h.split("\n") if self.lines else [h] for h in self.headers]
        out = ""
        for k in range(max(len(h) for h in heads)):
            out += GAP.join((h[k] if k < len(h) else "").ljust(w) for h, w in zip(heads, widths)).rstrip(" ") + "\n"
        return out + GAP.join("-" * w for w in widths) + "\n"

    def row(self, cells: Sequence[str]) -> str:
        widths = self.widths
        if all(len(c) <= w for c, w in zip(cells, widths)) and not (self.lines and any("\n" in c for c in cells)):
            return GAP.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(" ") + "\n"
        split = _wrap_lines if self.lines else _wrap_plain
        parts = [split(c, w) for c, w in zip(cells, widths)]
        out = []
        for k in range(max(len(p) for p in parts)):
            out.append(GAP.join((p[k] if k < len(p) else "").ljust(w) for p, w in zip(parts, widths)).rstrip(" "))
        return "\n".join(out) + "\n"


def _widest_line(text: str) -> int:
    """The width of a cell or header: its longest line (a newline starts a line of its own)."""
    if "\n" not in text:
        return len(text)
    return max(len(x) for x in text.split("\n"))


def _wrap_plain(text: str, width: int) -> list[str]:
    """A cell's lines at ``width``."""
    return wrap(text, width) if len(text) > width else [text]


def _wrap_lines(text: str, width: int) -> list[str]:
    """A cell's lines at ``width``: each of its own lines, wrapped."""
    return [x for line in text.split("\n") for x in _wrap_plain(line, width)]


def simple_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None,
                 first: Sequence[int] = (), lines: bool = False) -> str:
    """A whole table in the layout above (every cell a string), fitted to ``width``
    (default: :func:`terminal_width`); the columns in ``first`` wrap first; with ``lines``, a
    newline in a header or a cell starts a line of its own."""
    lay = Layout(headers, rows, terminal_width() if width is None else width, first, lines)
    return lay.head() + "".join(lay.row(r) for r in rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], tablefmt: str = "simple",
          width: int | None = None, first: Sequence[int] = ()) -> str:
    """Every command's table (without the last newline, as tabulate gives it): the layout above
    for ``simple``, any other tabulate format through tabulate (cells as text, not reparsed as
    numbers; it does not wrap). ``None`` is an empty cell; ``first``: the columns that wrap first."""
    cells = [["" if c is None else str(c) for c in r] for r in rows]
    if tablefmt == "simple":
        return simple_table(headers, cells, width, first).rstrip("\n")
    from tabulate import tabulate
    return tabulate(cells, headers=list(headers), tablefmt=tablefmt, disable_numparse=True)


def paragraph(text: str, width: int | None = None, first: str = "", rest: str = "") -> str:
    """A line of prose wrapped to the width (``terminal_width()`` by default), without the last newline."""
    return "\n".join(wrap(text, terminal_width() if width is None else width, first, rest))
