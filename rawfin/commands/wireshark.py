"""`rawfin wireshark`: the Lua post-dissector that makes rawfin's findings Wireshark fields.

``--path`` prints where the plugin is (for ``tshark -X lua_script:PATH``); ``--install`` copies it
into Wireshark's personal Lua plugins folder (as ``tshark -G folders`` names it, else
``~/.local/lib/wireshark/plugins``), where Wireshark and tshark load it at start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from rawfin.core.errors import OutputError

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "render", "rawfin.lua")


def personal_lua_folder() -> str:
    """Wireshark's personal Lua plugins folder, as tshark says it, else the documented default."""
    tshark = shutil.which("tshark")
    if tshark:
        try:
            out = subprocess.run([tshark, "-G", "folders"], capture_output=True, text=True, timeout=20).stdout
            for line in out.splitlines():
                name, _, value = line.partition(":")
                if name.strip() == "Personal Lua Plugins" and value.strip():
                    return value.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return os.path.join(os.path.expanduser("~"), ".local", "lib", "wireshark", "plugins")


def run(args) -> int:
    if args.path or not args.install:
        print(PLUGIN)
        if not args.path:
            print("rawfin wireshark: --install copies it into Wireshark's Lua plugins folder; or load it once: "
                  f"tshark -X lua_script:{PLUGIN} -r trace.rawfin.pcapng -Y 'rawfin.anomaly'", file=sys.stderr)
        return 0
    folder = args.dir or personal_lua_folder()
    target = os.path.join(folder, "rawfin.lua")
    try:
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(PLUGIN, target)
    except OSError as e:
        raise OutputError(f"{target}: cannot install the plugin: {e.strerror or e}") from None
    print(target)
    print("rawfin wireshark: installed; Wireshark and tshark load it at start. Try: tshark -r trace.rawfin.pcapng "
          "-Y 'rawfin.state == \"CLOSE_WAIT\"'", file=sys.stderr)
    return 0
