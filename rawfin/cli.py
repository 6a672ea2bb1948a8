"""rawfin's command line: one vocabulary for every subcommand.

Heavy modules (Scapy, the capture drivers) are imported inside the command
that needs them, so ``rawfin --help`` and ``rawfin states`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from rawfin.core.errors import (EXIT_CANTCREAT, EXIT_DATAERR, EXIT_INTERRUPTED, EXIT_NOINPUT, EXIT_NOPERM, EXIT_USAGE,
                     RawfinError)

EXIT_CODES = f"""exit codes:
  0    done (for check/replay: every close passed)
  1    a check failed (check, replay: the verdict is "no")
  2    usage error (bad option, an API call the state does not allow)
  {EXIT_DATAERR}   unreadable or damaged input (sysexits EX_DATAERR); what came before the damage is still printed
  {EXIT_NOINPUT}   an input file does not exist or cannot be opened (EX_NOINPUT)
  {EXIT_CANTCREAT}   an output file cannot be created (EX_CANTCREAT)
  69   packetdrill: a script needs a feature rawfin does not run (EX_UNAVAILABLE)
  {EXIT_NOPERM}   missing privilege (root, CAP_NET_RAW or CAP_NET_ADMIN) (EX_NOPERM)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""

ANNOTATE_NOTES = f"""Every packet is copied unchanged; rawfin's comments start with "rawfin: ".
Damaged input: the frames before the damage are written, marked INCOMPLETE (the
file's section comment, a comment on its last frame, the message on stderr), and the
exit code is {EXIT_DATAERR}; when not one frame is readable nothing is written. -o naming IN
is refused (2); an output that cannot be created exits 73 (EX_CANTCREAT).

"""

FORMATS_RECORDS = ("table", "jsonl", "csv")

#: what every command's --help ends with
EXAMPLES = {
    "states": ["rawfin states --close-only", "rawfin states --format jsonl"],
    "analyze": ["rawfin analyze trace.pcap --summary",
                "tcpdump -i eth0 -U -w - 'tcp port 443' | rawfin analyze - --format jsonl",
                "rawfin analyze rotated/ --by server --interval 10s --plot pileup.svg"],
    "check": ["rawfin check trace.pcap", "rawfin check -r a.pcap -r b.pcapng --allow-reset --format jsonl"],
    "annotate": ["rawfin annotate trace.pcap                # writes trace.rawfin.pcapng",
                 "rawfin annotate trace.pcap -o - | wireshark -k -i -"],
    "craft": ["rawfin craft 4way -x 1000 -y 2000 -w close.pcap", "rawfin craft simultaneous --format jsonl"],
    "scenario": ["rawfin scenario --list", "rawfin scenario lost-final-ack --format ladder",
                 "rawfin scenario normal-close --drop final-ack -w lost.pcap"],
    "live": ["sudo rawfin live -i lo -f 'tcp port 8080'",
             "sudo rawfin live -i lo --kernel-truth --duration 10 -w seen.pcap"],
    "peer": ["sudo rawfin peer --list", "sudo rawfin peer --scenario lost-final-ack",
             "sudo rawfin peer --file my.toml --kernel client"],
    "replay": ["rawfin replay trace.pcap --conn 0 --as client",
               "sudo rawfin replay trace.pcap --as server --against kernel",
               "rawfin replay trace.pcap --export scenario conn0.toml"],
    "wireshark": ["rawfin wireshark --install", "tshark -X lua_script:$(rawfin wireshark --path) -r t.rawfin.pcapng "
                  "-Y 'rawfin.state == \"CLOSE_WAIT\"'"],
    "demo": ["sudo rawfin demo timewait-bind"],
    "packetdrill": ["sudo rawfin packetdrill tests/packetdrill/lost-final-ack.pkt",
                    "rawfin packetdrill --against rawfin tests/packetdrill/*.pkt --format jsonl"],
}


def _examples(name: str) -> str:
    lines = EXAMPLES.get(name, [])
    return ("\nexamples:\n" + "".join(f"  {x}\n" for x in lines)) if lines else ""


def _seconds(text: str, *, zero: bool) -> float:
    """A finite number of seconds, above 0 (``zero``: 0 or more, 0 meaning never)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero):
        hint = "0 or more (0: never)" if zero else "above 0"
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds, {hint}")
    return v


def seconds(text: str) -> float:
    """argparse type: a finite, positive number of seconds."""
    return _seconds(text, zero=False)


def timeout(text: str) -> float:
    """argparse type: a finite number of seconds >= 0 (0: never)."""
    return _seconds(text, zero=True)


def speed(text: str) -> float:
    """argparse type: a finite factor >= 0 (0: as fast as the peer allows)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite factor of 0 or more")
    return v


def seqno(text: str) -> int:
    """argparse type: a sequence number 0 .. 2**32-1."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r}: a sequence number is 0 .. 4294967295")
    return v


def duration(text: str) -> float:
    """argparse type: a time span above 0: '1s', '500ms', '2m', '1h', or plain seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    t = text.strip().lower()
    num, unit = t, "s"
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            num, unit = t[: -len(u)], u
            break
    try:
        v = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time span (try 1s, 500ms, 5m)") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a span above 0")
    return v


def _whole(text: str, low: int, what: str, hint: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"{text!r}: {hint}")
    return v


def buffer_kib(text: str) -> int:
    """argparse type: a buffer size in KiB (tcpdump's -B), at least 1."""
    return _whole(text, 1, "a whole number of KiB", "give a size of 1 KiB or more")


def count(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _whole(text, 0, "an integer", "give 0 or more")


def tablefmt(text: str) -> str:
    """argparse type: a tabulate table format."""
    from tabulate import tabulate_formats
    if text not in tabulate_formats:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tabulate format; try: {', '.join(tabulate_formats)}")
    return text


def _add_format(p: argparse.ArgumentParser, choices=FORMATS_RECORDS) -> None:
    p.add_argument("--format", default="table", choices=choices,
                   help="output: %(choices)s (default: %(default)s)")
    p.add_argument("--tablefmt", default="simple", metavar="NAME", type=tablefmt,
                   help="any tabulate format for --format table (default: simple, rawfin's own writer, fitted to "
                        "the terminal's width: COLUMNS, else 100 when not a terminal); the others (github, grid, "
                        "plain, ...) go through tabulate, which is slower")


FILTER_HELP = ("tcpdump's filter language (libpcap): 'tcp port 80', 'host 192.0.2.1 and not port 22', "
               "'src host H', 'tcp[tcpflags] & tcp-rst != 0'. Only the frames it matches are analysed, as if "
               "the capture had been written with `tcpdump -w FILE EXPR`; frame numbers stay those of the file. "
               "Filter on hosts or ports to keep whole connections (default: every frame)")


def _add_inputs(p: argparse.ArgumentParser, what: str = "analysed") -> None:
    """Captures as tcpdump/tshark users name them: positional, -r (repeatable), '-', .gz, directories."""
    p.add_argument("captures", nargs="*", metavar="CAPTURE",
                   help="pcap or pcapng files (gzip-compressed too), '-' for standard input, or a directory "
                        f"(its captures in name order); {what} in the order given, the -r files after")
    p.add_argument("-r", "--read", action="append", default=[], metavar="FILE",
                   help="a capture to read, as tcpdump -r and tshark -r (repeatable)")
    p.add_argument("--filter", metavar="EXPR", default=None, help=FILTER_HELP)


def _add_one_input(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    """One capture, positional or as -r FILE (tcpdump's and tshark's spelling)."""
    p.add_argument("capture", nargs="?", metavar=metavar, help=help)
    p.add_argument("-r", "--read", dest="read_one", metavar="FILE", default=None,
                   help=f"the same as {metavar}, as tcpdump -r and tshark -r spell it")


def _one_input(parser: argparse.ArgumentParser, args) -> None:
    if not hasattr(args, "read_one"):
        return
    if args.capture and args.read_one and args.capture != args.read_one:
        parser.error(f"{args.command}: one capture: either {args.capture!r} or -r {args.read_one!r}")
    args.capture = args.capture or args.read_one
    if not args.capture:
        parser.error(f"{args.command}: name the capture (or -r FILE)")


def _add_limits(p: argparse.ArgumentParser) -> None:
    """How long half-open connections are followed, and how many connections at once (memory)."""
    from rawfin.core.rules import SYN_ACK_TIMEOUT_NS, SYN_TIMEOUT_NS

    p.add_argument("--syn-timeout", type=timeout, default=SYN_TIMEOUT_NS / 1e9, metavar="SECONDS",
                   help="a SYN never answered: the connection is written out as it stands (close: timeout) this "
                        "long after the client's first SYN, in capture time, as Linux gives up (tcp_syn_retries 6); "
                        "0: never (default: %(default)g)")
    p.add_argument("--syn-ack-timeout", type=timeout, default=SYN_ACK_TIMEOUT_NS / 1e9, metavar="SECONDS",
                   help="a SYN,ACK never acknowledged: the same, this long after the server's first SYN,ACK "
                        "(tcp_synack_retries 5); 0: never (default: %(default)g)")
    p.add_argument("--max-connections", type=count, default=0, metavar="N",
                   help="at most N connections tracked at once (memory: a flood of SYNs): the least recently "
                        "active is written out as it stands (close: evicted) to make room, and counted at the "
                        "end; every connection still gets its record (default: 0, no limit)")


def limits(args) -> dict:
    """The observer's limits from --syn-timeout, --syn-ack-timeout (and --max-connections)."""
    out = {"syn_timeout_ns": round(args.syn_timeout * 1e9), "syn_ack_timeout_ns": round(args.syn_ack_timeout * 1e9)}
    if getattr(args, "max_connections", None):
        out["max_connections"] = args.max_connections
    return out


SEQ_HELP = ("sequence and acknowledgment numbers in what rawfin writes for people (segment descriptions, "
            "transition causes, anomaly details): 'absolute', as on the wire, or 'relative' to each side's "
            "initial sequence number, as Wireshark and tcpdump show them (a SYN is 0, the first data byte 1; a "
            "side first seen mid-stream counts from one before its first number, as Wireshark does); numeric "
            "fields of jsonl/csv records stay absolute (default: %(default)s)")


def _add_seq(p: argparse.ArgumentParser) -> None:
    """``--seq absolute|relative``, one default in every command that writes sequence numbers; tcpdump's
    ``-S`` (absolute) is taken too."""
    p.add_argument("--seq", choices=("absolute", "relative"), default="absolute", help=SEQ_HELP)
    p.add_argument("-S", dest="seq", action="store_const", const="absolute",
                   help="absolute sequence numbers, as tcpdump -S: the same as --seq absolute")


def relative_seq(args) -> bool:
    """``--seq relative`` was asked for."""
    return getattr(args, "seq", "absolute") == "relative"


def _add_engine(p: argparse.ArgumentParser, when: str = "") -> None:
    p.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                   help="who follows the connections: c, the compiled lane (the same records, some 30x faster "
                        f"on big captures); python, the reference; auto (default): c when it is built{when}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rawfin",
        description="TCP connection teardown, visible and testable at the level of real packets.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from rawfin import __version__
    p.add_argument("--version", action="version", version=f"rawfin {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        import textwrap
        return sub.add_parser(name, help=help, description=textwrap.fill(help, 79),
                              epilog=EXIT_CODES + _examples(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    # states
    s = add("states", "print the TCP state transition table rawfin runs on, and the rules that classify "
                      "each segment (rawfin/core/rules.py)")
    _add_format(s, ("table", "jsonl", "csv"))
    s.add_argument("--close-only", action="store_true",
                   help="only the states of the close (from ESTABLISHED on: the 4-way close and its variants)")
    s.add_argument("--part", choices=("all", "transitions", "rules"), default="all",
                   help="the transition table, the rules, or both (default: %(default)s; csv prints one: "
                        "the transitions unless 'rules')")

    # analyze
    a = add("analyze", "every TCP connection in pcap/pcapng captures: each endpoint's states as the wire shows "
                       "them, who closed first, the kind of close, anomalies")
    _add_inputs(a)
    _add_format(a, ("table", "jsonl", "csv", "ladder", "mermaid"))
    a._option_string_actions["--format"].help = ("output: table, jsonl, csv; ladder and mermaid draw one connection "
                                                 "(--conn N, default 0) (default: %(default)s)")
    a.add_argument("--summary", action="store_true",
                   help="one record per connection in every format: a row per connection (table, csv), only "
                        "the connection records (jsonl)")
    a.add_argument("--conn", type=count, metavar="N", default=None,
                   help="only connection N (numbered from 0 in each capture, as the output names them)")
    a.add_argument("-q", "--quiet", action="store_true",
                   help="no per-capture statistics on stderr (frames, segments, connections)")
    a.add_argument("--by", choices=("server", "client", "host"), default=None,
                   help="the pile-up view: one row per server address:port (client: per client address; host: "
                        "per address, any role): connections, closes, who closed first, sockets in TIME_WAIT and "
                        "CLOSE_WAIT at the end and at the worst moment, the longest CLOSE_WAIT (default: off)")
    a.add_argument("--interval", type=duration, default=None, metavar="SPAN",
                   help="with --by: also a time series, one sample per group and SPAN of capture time "
                        "('1s', '500ms', '1m'; default: none)")
    a.add_argument("--plot", metavar="FILE.svg", default=None,
                   help="with --by: draw TIME_WAIT and CLOSE_WAIT over time per group as an SVG (default: none)")
    a.add_argument("--msl", type=seconds, default=30.0, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default: %(default)s, Linux)")
    _add_limits(a)
    a.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="a progress bar on stderr: auto shows it only on a terminal (default: %(default)s)")
    _add_engine(a)
    _add_seq(a)

    # check
    c = add("check", "exit 0 when every close in the captures is consistent and complete, 1 otherwise")
    _add_inputs(c, "checked")
    c.add_argument("--allow-reset", action="store_true", help="a connection ended by RST is not a failure")
    c.add_argument("--allow-incomplete", action="store_true",
                   help="a close still under way at the end of the capture, or not followed to its end "
                        "(close: evicted, --max-connections), is not a failure")
    c.add_argument("--allow-server-close", action="store_true",
                   help="the server closing first (TIME_WAIT on the server) is not a failure")
    c.add_argument("--allow-open", action="store_true",
                   help="a connection that never starts closing (half-open ones given up on, close: timeout, "
                        "too) is not a failure")
    _add_format(c)
    c.add_argument("--msl", type=seconds, default=30.0, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default: %(default)s, Linux)")
    _add_limits(c)
    _add_engine(c)
    _add_seq(c)

    # annotate
    n = add("annotate", "write a pcapng with rawfin's findings as packet comments (for Wireshark)")
    n.epilog = ANNOTATE_NOTES + n.epilog
    _add_one_input(n, "IN", "the capture to annotate (pcap or pcapng)")
    n.add_argument("-o", "--output", metavar="OUT.pcapng", default=None,
                   help="output file (default: IN's name with .rawfin.pcapng, next to IN; '-' for stdout)")
    n.add_argument("--msl", type=seconds, default=30.0, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default: %(default)s, Linux)")
    _add_limits(n)
    _add_engine(n)
    _add_seq(n)

    # craft
    k = add("craft", "craft a TCP close (the 4-way close or a variant) as real segments and write a capture")
    k.add_argument("kind", nargs="?", default="4way",
                   choices=("4way", "3way", "fin-with-data", "simultaneous", "rst", "connection"),
                   help="what to craft (default: %(default)s)")
    k.add_argument("--client", default="192.0.2.2:50001", metavar="IP:PORT",
                   help="the client's address (default: %(default)s)")
    k.add_argument("--server", default="192.0.2.1:80", metavar="IP:PORT",
                   help="the server's address (default: %(default)s)")
    k.add_argument("-x", dest="x", type=seqno, default=1000,
                   help="the active closer's FIN sequence number: its peer ACKs x+1 (default: %(default)s)")
    k.add_argument("-y", dest="y", type=seqno, default=2000,
                   help="the passive closer's FIN sequence number: ACKed with y+1 (default: %(default)s)")
    k.add_argument("--closer", choices=("client", "server"), default="client",
                   help="who closes first (default: %(default)s)")
    k.add_argument("--data", default="hello",
                   help="the payload of fin-with-data and connection (default: %(default)s)")
    k.add_argument("-w", "--write", metavar="FILE.pcap", default=None, help="write the segments as a pcap")
    _add_format(k, ("table", "jsonl"))
    _add_seq(k)

    # scenario
    e = add("scenario", "run two emulated endpoints over a faulty link: the classic closes and what goes "
                        "wrong in them (a lost final ACK, a lost FIN, crossing FINs, ...)")
    e.add_argument("name", nargs="?", metavar="NAME", help="a built-in scenario (--list names them)")
    e.add_argument("--list", action="store_true", help="list the scenarios")
    e.add_argument("--all", action="store_true", help="run every built-in scenario")
    e.add_argument("--file", metavar="FILE.toml", default=None, help="run a scenario file")
    _add_format(e, ("table", "jsonl", "csv", "ladder", "mermaid"))
    _add_seq(e)
    e.add_argument("-w", "--write", metavar="FILE.pcap", default=None, help="write the run as a capture")
    e.add_argument("--write-dir", metavar="DIR", default=None, help="with --all: write NAME.pcap for each")
    e.add_argument("--capture-at", choices=("sender", "client", "server"), default="sender",
                   help="where the capture point sits (default: each sender's side of the link)")
    e.add_argument("--msl", type=seconds, default=None, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default: the scenario's, else 30)")
    e.add_argument("--rto", type=seconds, default=None, metavar="SECONDS",
                   help="initial retransmission timeout, until a round trip is measured (then Linux's: "
                        "SRTT + 4*RTTVAR, at least 200 ms over SRTT) (default: the scenario's, else 1)")
    e.add_argument("--isn-client", type=seqno, default=None, metavar="X",
                   help="the client's initial sequence number (default: the scenario's)")
    e.add_argument("--isn-server", type=seqno, default=None, metavar="Y",
                   help="the server's initial sequence number (default: the scenario's)")
    e.add_argument("--drop", action="append", default=[], metavar="RULE",
                   help="drop segments: 'N' (the Nth segment), 'client:FIN', 'server:FIN#2', 'final-ack', "
                        "'p=0.1' (with --seed)")
    e.add_argument("--delay", action="append", default=[], metavar="RULE@SECONDS",
                   help="delay matching segments: 'server:FIN@0.5'")
    e.add_argument("--duplicate", action="append", default=[], metavar="RULE",
                   help="deliver matching segments twice: 'client:data#2'")
    e.add_argument("--reorder", action="append", default=[], metavar="RULE",
                   help="hold matching segments back until the next one in their direction has passed")
    e.add_argument("--seed", type=int, default=0, help="seed for 'p=' rules (default: %(default)s)")
    e.add_argument("--ipv6", action="store_true", help="use 2001:db8:: addresses")

    # live
    lv = add("live", "capture an interface (through the kernel's packet ring) and print transitions as they happen")
    lv.add_argument("-i", "--interface", default="lo", metavar="IFACE",
                    help="interface to capture on (default: %(default)s); 'any' for every interface (Linux cooked "
                         "capture, as tcpdump -i any); needs root or CAP_NET_RAW")
    lv.add_argument("-f", "--filter", "--bpf", dest="bpf", default="tcp", metavar="EXPR",
                    help="capture filter in tcpdump's language (libpcap; run in the kernel): 'tcp port 8080', "
                         "'host 127.0.0.1 and not port 22' (default: %(default)s)")
    lv.add_argument("-B", "--buffer-size", type=buffer_kib, default=None, metavar="KIB",
                    help="the kernel's packet ring for this capture, in KiB (units of 1024 bytes, as tcpdump's -B; "
                         "default: 16384, about 110,000 short segments waiting for rawfin); what does not fit is "
                         "dropped by the kernel, counted and reported")
    lv.add_argument("--count", type=count, default=None, metavar="N", help="stop after N TCP segments")
    lv.add_argument("--duration", type=seconds, default=None, metavar="SECONDS", help="stop after SECONDS")
    lv.add_argument("-w", "--write", metavar="FILE.pcap", default=None,
                    help="write the segments seen as a capture (complete also after Ctrl-C)")
    lv.add_argument("--kernel-truth", action="store_true",
                    help="record the kernel's own state changes (tracepoint sock:inet_sock_set_state, "
                         "needs root) and print them beside rawfin's, with a column saying where they agree")
    _add_format(lv, ("table", "jsonl"))
    lv.add_argument("--msl", type=seconds, default=30.0, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default: %(default)s, Linux)")
    _add_limits(lv)
    _add_engine(lv)
    _add_seq(lv)

    # peer
    pe = add("peer", "play one side of a connection against the real Linux stack over TUN "
                     "(in a network namespace of rawfin's own; needs root / CAP_NET_ADMIN)")
    pe.add_argument("--scenario", default=None, metavar="NAME",
                    help="lost-final-ack, simultaneous-close, timewait-refin, fin-with-data, seq-wraparound, "
                         "rst-in-fin-wait-2, server-active-close (--list describes them; each is a scenario file "
                         "in rawfin/sim/scenarios/peer/)")
    pe.add_argument("--file", default=None, metavar="FILE.toml",
                    help="run a scenario file (docs/scenario-format.md, rawfin/sim/scenarios/*.toml): the kernel plays "
                         "one side (--kernel), rawfin's endpoint the other, the file's faults act on the link")
    pe.add_argument("--kernel", choices=("client", "server"), default=None,
                    help="with --file: the side the kernel plays (default: the file's kernel = ..., else server)")
    pe.add_argument("--list", action="store_true", help="list the scenarios")
    pe.add_argument("-w", "--write", metavar="FILE.pcap", default=None,
                    help="write the segments that crossed the TUN device as a capture")
    _add_format(pe, ("table", "jsonl"))
    _add_seq(pe)

    # replay
    rp = add("replay", "play one side of a captured connection against a live peer (the emulator, or the "
                       "Linux kernel in a namespace of rawfin's own) and report where the live side diverges")
    _add_one_input(rp, "CAPTURE", "the capture holding the connection")
    rp.add_argument("--conn", type=count, default=0, metavar="N", help="the connection to replay (default: 0)")
    rp.add_argument("--as", dest="as_side", choices=("client", "server"), default=None,
                    help="the side rawfin plays from the recording; the other side is live")
    rp.add_argument("--against", choices=("emulator", "kernel"), default="emulator",
                    help="the live side: the emulator's endpoint (default) or a real kernel socket over TUN "
                         "in a network namespace of rawfin's own (needs root / CAP_NET_ADMIN)")
    rp.add_argument("--speed", type=speed, default=1.0, metavar="X",
                    help="scale the recorded gaps (2: twice as fast; 0: as fast as the live side allows; "
                         "default: %(default)s)")
    rp.add_argument("--mid-stream", action="store_true",
                    help="replay a connection whose handshake is not in the capture, after a made-up one")
    rp.add_argument("--export", nargs=2, metavar=("scenario", "FILE"), default=None,
                    help="write the connection as a scenario file (docs/scenario-format.md); '-' for stdout")
    rp.add_argument("-w", "--write", metavar="FILE.pcap", default=None,
                    help="write the live run's segments as a capture (at the live side's interface)")
    _add_format(rp, ("table", "jsonl"))
    _add_seq(rp)

    # wireshark
    w = add("wireshark", "the Wireshark plugin that turns rawfin's packet comments (rawfin annotate) into "
                         "filterable fields: rawfin.state, rawfin.transition, rawfin.anomaly, rawfin.closer, ...")
    w.add_argument("--install", action="store_true",
                   help="copy the plugin into Wireshark's personal Lua plugins folder (default: only print its path)")
    w.add_argument("--dir", metavar="DIR", default=None,
                   help="with --install: this folder instead (default: what `tshark -G folders` names)")
    w.add_argument("--path", action="store_true", help="print the plugin's path only (for tshark -X lua_script:PATH)")
    # packetdrill
    pd = add("packetdrill", "run packetdrill test scripts (.pkt) against the Linux kernel (in a network namespace "
                            "of rawfin's own; needs root) or rawfin's endpoint, with both sides' states")
    pd.add_argument("scripts", nargs="+", metavar="SCRIPT.pkt", help="packetdrill scripts, run one after another")
    pd.add_argument("--against", choices=("kernel", "rawfin"), default="kernel",
                    help="the system under test: a real Linux socket over a TUN device (default) or rawfin's "
                         "endpoint on virtual time (no sleeping)")
    pd.add_argument("-w", "--write", metavar="FILE.pcap", default=None,
                    help="write the segments both ways as a capture (at the system under test's interface)")
    _add_format(pd, ("table", "jsonl"))
    pd.add_argument("--drop", action="append", default=[], metavar="RULE",
                    help="drop segments on the link, as rawfin scenario takes them: 'N', 'client:FIN', "
                         "'server:data#2', 'final-ack' (client: the side that sent the SYN)")
    pd.add_argument("--delay", action="append", default=[], metavar="RULE@SECONDS",
                    help="delay matching segments: 'server:FIN@0.5'")
    pd.add_argument("--duplicate", action="append", default=[], metavar="RULE",
                    help="deliver matching segments twice: 'client:data#2'")
    pd.add_argument("--seed", type=int, default=0, help="seed for 'p=' rules, ISNs and ports (default: 0)")
    pd.add_argument("--ip-version", "--ip_version", dest="ip_version", default=None,
                    choices=("ipv4", "ipv6", "ipv4-mapped-ipv6"), help="packetdrill's --ip_version")
    pd.add_argument("--local-ip", "--local_ip", dest="local_ip", default=None, metavar="ADDR",
                    help="the system under test's address (default 192.168.0.1 / fd3d:fa7b:d17d::1)")
    pd.add_argument("--remote-ip", "--remote_ip", dest="remote_ip", default=None, metavar="ADDR",
                    help="the script's address (default 192.0.2.1 / 2001:db8::1)")
    pd.add_argument("--tolerance-usecs", "--tolerance_usecs", dest="tolerance_usecs", type=int, default=None,
                    metavar="US", help="timing tolerance (default: the script's, else 4000)")
    pd.add_argument("--tcp-ts-tick-usecs", "--tcp_ts_tick_usecs", dest="tcp_ts_tick_usecs", type=int,
                    default=None, metavar="US", help="check outbound TS val at this tick (default: the script's)")
    pd.add_argument("--mtu", type=int, default=None, help="the device's MTU (default 1500)")
    pd.add_argument("--gateway-ip", "--gateway_ip", "--netmask-ip", "--netmask_ip", dest="gateway_ip", default=None,
                    metavar="ADDR", help="accepted for packetdrill's command lines; rawfin routes the script's "
                                         "side through tun0 itself, so it changes nothing")
    pd.add_argument("-D", "--define", action="append", default=[], metavar="NAME=VALUE",
                    help="packetdrill's -D: a symbol the script uses")

    # demo
    d = add("demo", "demonstrations on the real kernel over loopback")
    d.add_argument("which", choices=("timewait-bind",),
                   help="timewait-bind: the side that closes first holds TIME_WAIT; a server that did cannot "
                        "bind its port again")
    return p


COMMANDS = {
    "states": "rawfin.commands.states",
    "analyze": "rawfin.commands.analyze",
    "check": "rawfin.commands.check",
    "annotate": "rawfin.commands.annotate",
    "craft": "rawfin.commands.craft",
    "scenario": "rawfin.commands.scenario",
    "live": "rawfin.commands.live",
    "peer": "rawfin.commands.peer",
    "demo": "rawfin.commands.demo",
    "replay": "rawfin.commands.replay",
    "wireshark": "rawfin.commands.wireshark",
    "packetdrill": "rawfin.commands.packetdrill",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help, --version, or argparse's own usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _one_input(parser, args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        mod = importlib.import_module(COMMANDS[args.command])
        return int(mod.run(args) or 0)
    except RawfinError as e:
        print(f"rawfin {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"rawfin {args.command}: {e.filename}: no such file", file=sys.stderr)
        return EXIT_NOINPUT
    except IsADirectoryError as e:
        print(f"rawfin {args.command}: {e.filename}: is a directory", file=sys.stderr)
        return EXIT_NOINPUT
    except PermissionError as e:
        print(f"rawfin {args.command}: {e.filename or e}: permission denied", file=sys.stderr)
        return EXIT_NOPERM if e.filename is None else EXIT_NOINPUT
    except KeyboardInterrupt:
        print(f"rawfin {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 0
