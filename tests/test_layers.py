"""The import contract: the package's folders are its layers, and imports point one way.

core      the sans-IO TCP model: imports nothing of rawfin outside itself
wire      link-layer decoding, the Scapy codec, pcap/pcapng: core only
capture   the analysis pipeline and its compiled lane (a driver): core, wire
sim       crafted segments, emulator, scenario files, replays (a driver): core, wire
linux     drivers of the real kernel: core, wire, sim (hosts, links, scenario files)
render    records, tables, ladders, annotated captures: core, wire
commands  the command line (and cli.py): anything

Drivers (capture, sim, linux) do not import each other except linux -> sim; renderers
import no driver. The test reads every module's imports (including those inside functions).
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rawfin")

ALLOWED = {
    "core": {"core"},
    "wire": {"core", "wire"},
    "capture": {"core", "wire", "capture"},
    "sim": {"core", "wire", "sim"},
    "linux": {"core", "wire", "sim", "linux"},
    "render": {"core", "wire", "render"},
}

# Imports that break the contract today, each to be removed (issue 13); the list may only shrink.
KNOWN: set[tuple[str, str]] = set()     # (none left)


def _imports(path: str, root: str):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    pkg = os.path.relpath(os.path.dirname(path), os.path.dirname(root)).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "rawfin":      # from rawfin import X: X is the module
                for a in node.names:
                    yield f"rawfin.{a.name}"
            else:
                yield mod
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def violations(root: str = ROOT) -> set[tuple[str, str]]:
    found = set()
    for d, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")
            layer = rel.split("/")[1] if rel.count("/") >= 2 else None
            if layer not in ALLOWED:
                continue
            for mod in _imports(path, root):
                parts = mod.split(".")
                if parts[0] != "rawfin" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in ALLOWED and target not in ALLOWED[layer]:
                    found.add((rel, mod))
                elif target not in ALLOWED and target not in ("__version__",):
                    found.add((rel, mod))     # a layer reaching up into the command line
    return found


def test_every_module_is_in_a_layer():
    top = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"], "a module outside the layer folders"


def test_imports_point_one_way():
    found = violations()
    new = found - KNOWN
    assert not new, "imports against the layer contract:\n" + "\n".join(f"{a} imports {b}" for a, b in sorted(new))
    gone = KNOWN - found
    assert not gone, "no longer imported, take them off KNOWN:\n" + "\n".join(f"{a} -> {b}" for a, b in sorted(gone))


def test_the_contract_can_fail(tmp_path):
    # a core module importing a driver, or a renderer reaching a driver by a relative import
    (tmp_path / "rawfin" / "core").mkdir(parents=True)
    (tmp_path / "rawfin" / "render").mkdir()
    (tmp_path / "rawfin" / "core" / "probe.py").write_text("from rawfin.linux.live import Live\n")
    (tmp_path / "rawfin" / "render" / "probe.py").write_text("def f():\n    from ..capture import engine\n")
    (tmp_path / "rawfin" / "render" / "fine.py").write_text("from ..core import seq\nfrom . import records\n")
    assert violations(str(tmp_path / "rawfin")) == {("rawfin/core/probe.py", "rawfin.linux.live"),
                                                    ("rawfin/render/probe.py", "rawfin.capture")}
