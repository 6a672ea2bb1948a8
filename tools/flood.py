"""A SYN-flood capture: what a capture of a DDoS looks like, for measuring rawfin's memory on it.

    python tools/flood.py OUT.pcap                       # 1,000,000 SYNs at 50,000 per second
    python tools/flood.py OUT.pcap --syns 100000 --rate 1000

Every packet is a SYN (Ethernet, IPv4, TCP with an MSS option, correct checksums) from a random
source address and port to one server (10.0.0.1:80), with a random ISN; nothing answers. At the
default rate the whole flood lasts 20 s of capture time, less than Linux gives up on a SYN
(about 127 s), so every half-open connection is still open when the capture ends: the worst case
for a tracker that only times them out. The capture is a function of its parameters (``--seed``).
Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import START_US, _finish_sum, _words, cached_info  # noqa: E402
from rawfin.wire.pcapio import LINKTYPE_ETHERNET, PcapWriter  # noqa: E402

__all__ = ["generate_flood", "cached_flood", "SERVER"]

FLOOD_VERSION = 1
DEFAULT_SYNS = 1_000_000
DEFAULT_RATE = 50_000.0          # SYNs per second of capture time
SERVER = ("10.0.0.1", 80)

_ETH = bytes.fromhex("0200000001fe" "020000000101") + b"\x08\x00"
_PACK = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH4s").pack      # IPv4 (20) + TCP (20) + MSS option (4)
_MSS = b"\x02\x04\x05\xb4"                                  # MSS 1460


def generate_flood(path: str | os.PathLike, *, syns: int = DEFAULT_SYNS, rate: float = DEFAULT_RATE,
                   seed: int = 1) -> dict:
    """Write the flood to ``path`` (atomically); what is in it, as a dict."""
    if syns < 1 or rate <= 0:
        raise ValueError("syns >= 1 and rate > 0")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    dst = bytes(int(x) for x in SERVER[0].split("."))
    dport = SERVER[1]
    dst_words = _words(dst)
    base_ip = 0x4500 + 0x4000 + (64 << 8 | 6) + 44 + dst_words          # + length 44; + src, id per packet
    base_tcp = dst_words + 6 + 24 + dport + (6 << 12 | 0x02) + 64240 + _words(_MSS)
    step_us = 1e6 / rate
    tmp = os.fspath(path) + ".part"
    sources = set()
    getrandbits, randrange = rng.getrandbits, rng.randrange
    with PcapWriter(tmp, LINKTYPE_ETHERNET) as w:
        write = w.write
        for i in range(syns):
            while True:                 # a public-looking address (1.0.0.0 - 223.255.255.255), not 10/8
                a = randrange(0x01000000, 0xE0000000)
                if a >> 24 != 10:
                    break
            sport = randrange(1024, 65536)
            sources.add((a, sport))
            src = a.to_bytes(4, "big")
            seq = getrandbits(32)
            ip_id = getrandbits(16)
            sw = _words(src)
            icsum = _finish_sum(base_ip + sw + ip_id)
            tcsum = _finish_sum(base_tcp + sw + sport + (seq >> 16) + (seq & 0xFFFF))
            hdr = _PACK(0x45, 0, 44, ip_id, 0x4000, 64, 6, icsum, src, dst,
                        sport, dport, seq, 0, 6 << 4, 0x02, 64240, tcsum, 0, _MSS)
            write(_ETH + hdr, (START_US + int(i * step_us)) * 1000)
    os.replace(tmp, path)
    return {"path": os.fspath(path), "syns": syns, "rate": rate, "seed": seed, "connections": len(sources),
            "duration_s": (syns - 1) / rate, "size_bytes": os.path.getsize(path), "version": FLOOD_VERSION,
            "generate_s": time.perf_counter() - t0}


def cached_flood(out_dir: str, *, syns: int = DEFAULT_SYNS, rate: float = DEFAULT_RATE, seed: int = 1,
                 log=None) -> dict:
    """The flood for these parameters from ``out_dir``, generated first when it is not there."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"flood-v{FLOOD_VERSION}-n{syns}-r{rate:g}-s{seed}.pcap")
    meta = path + ".json"
    info = cached_info(path, FLOOD_VERSION)
    if info is not None:
        return dict(info, cached=True)
    if log:
        log(f"generating {path} ({syns:,} SYNs at {rate:g}/s) ...")
    info = generate_flood(path, syns=syns, rate=rate, seed=seed)
    with open(meta, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return dict(info, cached=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/flood.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", metavar="OUT.pcap")
    p.add_argument("--syns", type=int, default=DEFAULT_SYNS)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="PER_S")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    info = generate_flood(args.out, syns=args.syns, rate=args.rate, seed=args.seed)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
