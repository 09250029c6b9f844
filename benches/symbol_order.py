#!/usr/bin/env python3
"""Writes src/hsu.order: the functions of the `hsu` binary that a running master executes,
found by running one under valgrind's callgrind, which lists every function that ran.

Then, as root with `perf`, a real master (not under valgrind, where clone3 is refused and
hsu takes its fork fallback) is run a few times with the kernel's page-fault events traced:
a function whose first run faults in a page of code outside the order is added to it, and
the binary is linked again, until no such function is left.

`build.rs` links release builds with these functions placed together (LLD's
`--symbol-ordering-file`): a master then keeps about 3 MB of its code resident instead of
8 MB. Run this again after a dependency or toolchain update (the names carry a hash of the
crate's build, so an update renames them and the old file matches less and less; the
script says how many of the old file's names the binary still has). Needs valgrind
(`apt-get install valgrind`), Linux, and about five minutes.

    python3 benches/symbol_order.py [--keep DIR]

The master runs what users run most: process workers (managed ones that idle, one that
writes output, one that crashes and is restarted, an integrated one speaking the gRPC
protocol), native modules with an HTTP health check, and is operated from outside (ls,
status, logs, restart, stop, start, metrics, events, apply, SIGHUP) before SIGTERM stops it.
"""

import argparse
import bisect
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = os.path.join(ROOT, "src", "hsu.order")
HSU = os.path.join(ROOT, "target", "release", "hsu")
ECHO = os.path.join(ROOT, "target", "release", "hsu-echo")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleeps(n):
    return "".join(
        f"  - {{id: s{i}, type: process, execution: {{executable_path: /bin/sleep, args: ['600']}}, restart: {{policy: always}}}}\n"
        for i in range(n)
    )


# What every master runs: process workers started, supervised (output, a crash and its
# restart) and stopped, and `hsu ls`. Placed first. Hundreds of them: some paths are taken
# only past a size (a `join_all` of more than 30 futures, a table's growth), and each
# function left out of the order costs a master 64 KiB of resident code.
PROCESSES = f"""master:
  log_level: info
workers:
{sleeps(300)}  - id: ticker
    type: process
    execution: {{executable_path: /bin/sh, args: ['-c', 'while :; do echo tick; echo tock >&2; sleep 0.2; done']}}
  - id: flaky
    type: process
    execution: {{executable_path: /bin/sh, args: ['-c', 'sleep 2; exit 3']}}
    restart: {{policy: always}}
"""


def everything(port, echo_port):
    """Then the rest: probes of each kind, an integrated process, native modules, resource
    sampling."""
    return f"""master:
  log_level: info
  resource_interval: 1s
workers:
{sleeps(20)}  - id: ticker
    type: process
    execution: {{executable_path: /bin/sh, args: ['-c', 'while :; do echo tick; echo tock >&2; sleep 0.2; done']}}
    health_check: {{type: exec, command: [/bin/true], interval: 2s}}
  - id: flaky
    type: process
    execution: {{executable_path: /bin/sh, args: ['-c', 'sleep 2; exit 3']}}
    restart: {{policy: always}}
  - id: integrated
    type: process
    process_type: integrated
    execution: {{executable_path: {ECHO}}}
    config: {{host: 127.0.0.1, port: {echo_port}}}
    health_check: {{type: ping, interval: 2s}}
  - id: echo
    type: module
    module_name: echo
    config: {{host: 127.0.0.1, port: {port}}}
    health_check: {{type: http, url: "http://127.0.0.1:{port}/", interval: 2s}}
  - id: tick
    type: module
    module_name: ticker
    config: {{interval: 1s, message: tick}}
"""


def get(run_dir, path, most=None):
    """GET `path` from the master's control socket (at most `most` bytes of the body: an
    event stream does not end)."""

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(os.path.join(run_dir, "hsu.sock"))

    conn = Conn("localhost", timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read(most)
    conn.close()
    return body


def hsu(*args, cwd):
    return subprocess.run([HSU, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def callgrind_functions(path, binary):
    """Every function of `binary` in a callgrind output, in order of first appearance."""
    objects, functions, seen, order = {}, {}, set(), []
    current = called = None
    line_re = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")
    with open(path, errors="replace") as f:
        for line in f:
            m = line_re.match(line.rstrip("\n"))
            if not m:
                continue
            kind, key, name = m.groups()
            if kind in ("ob", "cob"):
                if name:
                    objects[key] = name
                if kind == "ob":
                    current, called = objects[key], None
                else:
                    called = objects[key]
                continue
            if name:
                functions[key] = name
            owner = current if kind == "fn" else (called or current)
            if kind == "fn":
                called = None
            name = re.sub(r"'\d+$", "", functions[key])
            if owner == binary and name not in seen and not name.startswith("0x"):
                seen.add(name)
                order.append(name)
    return order


def text_functions(binary):
    """The functions of `binary`: (address, size, name), by address."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True)
    return sorted(
        (int(p[0], 16), int(p[1], 16), p[3])
        for p in (line.split() for line in out.stdout.splitlines())
        if len(p) == 4 and p[2] in "tTwW"
    )


def text_symbols(binary):
    """The size of each function of `binary`, by name."""
    return {name: size for _, size, name in text_functions(binary)}


def profile(work, config_text, running, operate):
    """The functions of the binary that ran in a master of `config_text` under callgrind:
    up until `running` workers run, then (`operate`) driven through its API, then stopped."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "hsu.yaml"), "w") as f:
        f.write(config_text)
    out = os.path.join(work, "callgrind.out")
    run_dir = os.path.join(work, "hsu-run")
    master = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", HSU, "run", "hsu.yaml"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "master.log"), "w"),
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            listed = hsu("ls", cwd=work)
            if listed.returncode == 0 and listed.stdout.count(" running ") >= running:
                break
            if master.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the master did not come up (see {work}/master.log)\n{listed.stdout}{listed.stderr}")
            time.sleep(1)
        time.sleep(5)  # output, a crash and its restart (probe rounds, resource samples)
        if operate:
            for command in (
                ["ls"],
                ["status", "s1"],
                ["logs", "ticker", "-n", "5"],
                ["logs", "-n", "5"],
                ["restart", "s1"],
                ["stop", "s2"],
                ["start", "s2"],
                ["apply"],
            ):
                done = hsu(*command, cwd=work)
                if done.returncode != 0:
                    print(f"warning: hsu {' '.join(command)}: {done.stderr.strip()}", file=sys.stderr)
            get(run_dir, "/v1/metrics")
            get(run_dir, "/v1/master")
            get(run_dir, "/v1/events?since=0", most=200)
            master.send_signal(signal.SIGHUP)
            time.sleep(3)
        hsu("ls", cwd=work)
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=180)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    return callgrind_functions(out, HSU)


def write(first, rest):
    """Each part sorted (by crate and module, as the names are mangled): the file changes only
    where what ran did."""
    with open(ORDER, "w") as f:
        f.write("\n".join(first + rest) + "\n")


def code_faults(work, ordered):
    """Functions of the binary outside `ordered` whose code a real master faulted in (the
    first run of each 64 KiB of code outside the order shows as one fault)."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "hsu.yaml"), "w") as f:
        f.write(PROCESSES)
    data = os.path.join(work, "faults.data")
    script = f"{HSU} run hsu.yaml >/dev/null 2>&1 & P=$!; sleep 4; {HSU} ls >/dev/null; kill -TERM $P; wait $P"
    subprocess.run(
        ["perf", "record", "-q", "-e", "exceptions:page_fault_user", "-o", data, "--", "sh", "-c", script],
        cwd=work,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    events = subprocess.run(["perf", "script", "-i", data, "--show-mmap-events", "-F", "pid,trace"], capture_output=True, text=True).stdout
    # The master's code mapping (the first process to map the binary; `hsu ls` maps it too),
    # and the binary's symbols by address.
    maps = {}
    for line in events.splitlines():
        m = re.search(r"MMAP2 (\d+)/\d+: \[0x([0-9a-f]+)\(0x([0-9a-f]+)\) @ 0x([0-9a-f]+) .*\]: r-xp (\S+)$", line)
        if m and os.path.realpath(m.group(5)) == os.path.realpath(HSU):
            maps.setdefault(m.group(1), tuple(int(x, 16) for x in m.groups()[1:4]))
    master = next(iter(maps))
    headers = subprocess.run(["readelf", "-lW", HSU], capture_output=True, text=True, check=True).stdout
    segment = next(
        (int(p[1], 16), int(p[2], 16)) for p in (l.split() for l in headers.splitlines()) if p and p[0] == "LOAD" and "E" in p[6:8]
    )
    symbols = text_functions(HSU)
    starts = [s[0] for s in symbols]
    found = []
    for line in events.splitlines():
        # error_code 0x14: a user-mode instruction fetch.
        # (A spawned child shares the master's memory until its exec: its faults count too.)
        m = re.match(r"\s*(\d+)\s+address=0x([0-9a-f]+) ip=0x[0-9a-f]+ error_code=0x14", line)
        if not m or (m.group(1) in maps and m.group(1) != master):
            continue
        address = int(m.group(2), 16)
        base, size, offset = maps[master]
        if not base <= address < base + size:
            continue
        va = address - base + offset - segment[0] + segment[1]
        i = bisect.bisect_right(starts, va) - 1
        if i >= 0 and va < symbols[i][0] + symbols[i][1]:
            name = symbols[i][2]
            if name not in ordered and name not in found:
                found.append(name)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="run in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install valgrind)")
    subprocess.run(["cargo", "build", "--release", "--bin", "hsu", "--bin", "hsu-echo"], cwd=ROOT, check=True)
    work = args.keep or tempfile.mkdtemp(prefix="hsu-order-")
    first = profile(os.path.join(work, "processes"), PROCESSES, 301, operate=False)
    rest = profile(os.path.join(work, "everything"), everything(free_port(), free_port()), 24, operate=True)
    seen = set(first)
    rest = [n for n in rest if n not in seen]
    sizes = text_symbols(HSU)
    first = sorted(n for n in first if n in sizes)
    rest = sorted(n for n in rest if n in sizes)
    old = []
    if os.path.exists(ORDER):
        with open(ORDER) as f:
            old = [line.strip() for line in f if line.strip()]
    still = sum(1 for n in old if n in sizes)
    write(first, rest)
    if shutil.which("perf") and os.geteuid() == 0:
        for round in range(1, 9):
            subprocess.run(["cargo", "build", "--release", "--bin", "hsu"], cwd=ROOT, check=True)
            faulted = code_faults(os.path.join(work, f"real-{round}"), set(first))
            print(f"refinement {round}: {len(faulted)} functions faulted in code outside the order")
            if not faulted:
                break
            first = sorted(set(first) | set(faulted))
            rest = [n for n in rest if n not in set(faulted)]
            write(first, rest)
    else:
        print("no refinement: it needs perf and root", file=sys.stderr)
    sizes = text_symbols(HSU)
    names = first + rest
    total = sum(sizes.values())
    ran = sum(sizes[n] for n in names)
    print(f"{len(names)} functions ran: {ran / 1e6:.2f} MB of {total / 1e6:.2f} MB of code")
    print(f"  first, those of a master of process workers: {len(first)}, {sum(sizes[n] for n in first) / 1e6:.2f} MB")
    if old:
        print(f"the previous order had {len(old)} names, {still} of them still in this binary")
    print(f"written: {ORDER}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
