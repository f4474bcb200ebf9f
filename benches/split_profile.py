#!/usr/bin/env python3
"""Splits a `perf` profile of `cargo bench --bench load -- callbacks` into callbot rounds and
bare-endpoint rounds, and says where each side's samples went (BENCHMARKS.md, callbacks).

    perf record -F 250 --call-graph dwarf,32768 -D 12000 -o cb.data \
        target/release/deps/load-* callbacks
    perf script -i cb.data -F tid,time,ip,sym --no-inline > cb.script
    python3 benches/split_profile.py cb.script [N]

Both servers, the client and the fakes share one process and two cores, and the rounds
alternate, so a sample is charged to a callbot round when its time slice (0.25 s) holds
callbot frames. The client does the same work per request on both sides, so its samples are
the yardstick: every other count is printed per client sample. With N, the N heaviest
frames (inclusive) of callbot's server side are listed too.
"""

import collections
import re
import sys

SLICE = 0.25
CLIENT = re.compile(r"reqwest|hyper_util::client|hyper::client|load::hammer")
SERVER = re.compile(r"axum::serve|hyper::server|hyper::proto::h1::dispatch")
ALLOC = re.compile(r"malloc|free|memmove|memcpy|realloc")


def samples(path):
    head, frames = None, []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if head:
                yield head, frames
            head, frames = None, []
        elif head is None:
            m = re.match(r"\s*\d+\s+([\d.]+):", line)
            head = float(m.group(1)) if m else None
        else:
            ip, _, sym = line.strip().partition(" ")
            frames.append((ip, sym))
    if head:
        yield head, frames


def main():
    all_samples = list(samples(sys.argv[1]))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    t0 = min(t for t, _ in all_samples)
    marks = collections.defaultdict(lambda: [0, 0])
    for t, frames in all_samples:
        m = marks[int((t - t0) / SLICE)]
        m[1] += 1
        m[0] += any("callbot::" in f for _, f in frames)

    def side_of(t):
        ours, n = marks[int((t - t0) / SLICE)]
        return "callbot" if ours > 0.03 * n else "bare"

    counts = {"callbot": collections.Counter(), "bare": collections.Counter()}
    heavy, server_n = collections.Counter(), 0
    for t, frames in all_samples:
        text = " ".join(f for _, f in frames)
        part = "client" if CLIENT.search(text) else "server" if SERVER.search(text) else "other"
        ip, leaf = frames[0] if frames else ("", "")
        kind = "kernel" if ip.startswith("ffff") else "alloc" if ALLOC.search(leaf) else "user"
        side = side_of(t)
        counts[side][(part, kind)] += 1
        counts[side][(part, "all")] += 1
        if side == "callbot" and part == "server" and top:
            server_n += 1
            for name in {f[:150] for _, f in frames}:
                heavy[name] += 1
    print("per client sample   callbot rounds   bare rounds")
    for part in ("server", "other"):
        for kind in ("all", "user", "alloc", "kernel"):
            row = [counts[s][(part, kind)] / max(counts[s][("client", "all")], 1) for s in counts]
            print(f"{part:6} {kind:7}      {row[0]:10.3f}   {row[1]:11.3f}")
    skip = re.compile(r"tokio::runtime|std::sys|clone3|start_thread|call_once|thread_start")
    for name, n in heavy.most_common(top * 4):
        if not skip.search(name) and top > 0:
            top -= 1
            print(f"{100 * n / server_n:5.1f}% {name}")


if __name__ == "__main__":
    main()
