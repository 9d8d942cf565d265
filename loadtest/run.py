#!/usr/bin/env python3
"""fleetwake load test: one run, one target, every sender side by side.

Started by loadtest/run (which installs nginx, h2load, node and node-wns and
builds fleetwake). This script:

1. makes a test CA and a leaf for *.notify.windows.com, login.live.com and
   localhost (openssl, in a temp dir), and starts nginx (one worker, TLS, h2 and
   HTTP/1.1) on 127.0.0.1;
2. measures, against that same target, with the same payload (4 bytes), headers
   and connection counts:
   - h2load over HTTP/2 (-c 4 -m 100) and HTTP/1.1 (--h1 -c 64), each with
     -t 1 and -t 2, interleaved with `fleetwake bench` closed-loop runs with
     --threads 1 and 2, once per HTTP stack (`--stack own`, the project's
     codecs, and `--stack crates`, the h2 crate and hyper), for --rounds
     rounds (at least 3). Each contender's figure is the median over the
     rounds of its best run inside a round, with the spread (min..max) and
     the per-round ratios beside it;
   - `fleetwake bench` open loop at 80% of its best closed-loop rate;
   - node-wns 0.5.4 (sendRaw, 256 in flight over 64 keep-alive sockets);
   - `fleetwake campaign` over a generated file of 1,000,000 devices, and
     4,000,000, recording peak RSS;
3. prints a table of ratios and writes loadtest/results/<date>.json, .txt, .md
   and .svg.

It raises its own priority (nice and the session's autogroup, restored at the
end) so that other work on the machine disturbs the measurement less.

With --soak it instead runs `fleetwake bench` for 5 minutes at 80% of the median
of three closed-loop runs, and records throughput, latency and RSS every 10 s.

Every process it starts is stopped by its PID. Only 127.0.0.1 is contacted.
"""

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FLEETWAKE = os.environ.get("FLEETWAKE_BIN", os.path.join(REPO, "target", "release", "fleetwake"))
WNS_DIR = os.environ.get("FLEETWAKE_WNS_DIR", os.path.join(HERE, ".cache", "node-wns"))

CHANNEL_HOST = "bench.notify.windows.com"
PAYLOAD = b"wake"
# The headers fleetwake sends (its MS-CV is fresh per request; h2load's is fixed).
PUSH_HEADERS = [
    "authorization: Bearer bench",
    "content-type: application/octet-stream",
    "x-wns-type: wns/raw",
    "x-wns-cache-policy: cache",
    "ms-cv: tul4NUsfs0Kpwlb4ZnLnXw.0",
]

STARTED = []  # PIDs this script started and has not reaped


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_cpu(pid):
    """User+system CPU seconds of a running process (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tck
    except (OSError, IndexError, ValueError):
        return 0.0


def run_measured(cmd, env=None, cwd=None, timeout=900, stdout_path=None):
    """Runs cmd to its end; returns (exit code, stdout text, wall s, rusage of the child)."""
    t0 = time.time()
    out = open(stdout_path, "w+") if stdout_path else tempfile.TemporaryFile("w+")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    STARTED.append(p.pid)
    deadline = t0 + timeout
    status, ru = None, None
    while True:
        pid, st, r = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            status, ru = st, r
            break
        if time.time() > deadline:
            log(f"  timeout: stopping PID {p.pid}")
            os.kill(p.pid, signal.SIGTERM)
            time.sleep(2)
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    STARTED.remove(p.pid)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    err = p.stderr.read()
    out.seek(0)
    text = out.read()
    out.close()
    if p.returncode not in (0, 1):
        log(f"  {cmd[0]} exited {p.returncode}: {err.strip()[-2000:]}")
    return p.returncode, text, wall, ru, err


# ---------------------------------------------------------------------------
# The target


def make_certs(d):
    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "7", "-subj", "/CN=fleetwake loadtest CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:*.notify.windows.com,DNS:login.live.com,DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "leaf.pem", "-days", "7", "-extfile", "leaf.ext")


class Nginx:
    def __init__(self, d, port):
        self.d, self.port = d, port
        os.makedirs(os.path.join(d, "body"), exist_ok=True)
        with open(os.path.join(HERE, "nginx.conf.in")) as f:
            conf = f.read().replace("@DIR@", d).replace("@PORT@", str(port))
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(d, "nginx.out"), "w")
        self.p = subprocess.Popen(["nginx", "-p", d, "-c", self.conf], stdout=self.log,
                                  stderr=subprocess.STDOUT)
        STARTED.append(self.p.pid)
        if not wait_port(port):
            raise SystemExit(f"nginx did not start; see {d}/nginx.out and {d}/error.log")

    def cpu(self):
        return proc_cpu(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGQUIT)  # graceful, by PID
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.p.pid in STARTED:
            STARTED.remove(self.p.pid)


# ---------------------------------------------------------------------------
# The senders


def rusage_cpu(ru):
    return ru.ru_utime + ru.ru_stime


def h2load(args, target, h1, threads, n):
    conns = args.h1_connections if h1 else args.h2_connections
    cmd = ["h2load", "-n", str(n), "-c", str(conns), "-t", str(threads),
           f"--connect-to=127.0.0.1:{target.port}", "-d", os.path.join(target.d, "payload")]
    if h1:
        cmd += ["--h1", "-m", "1"]
    else:
        cmd += ["-m", str(args.h2_streams)]
    for h in PUSH_HEADERS:
        cmd += ["-H", h]
    cmd.append(f"https://{CHANNEL_HOST}/?token=ok.1")
    cpu0 = target.cpu()
    code, out, wall, ru, _ = run_measured(cmd)
    tcpu = target.cpu() - cpu0
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    ok = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not m or not ok:
        log(out[-2000:])
        raise SystemExit("could not read h2load's output")
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    done = int(ok.group(3))
    cpu = rusage_cpu(ru)
    return {
        "tool": "h2load", "http": "h1" if h1 else "h2", "threads": threads, "connections": conns,
        "streams_per_connection": 1 if h1 else args.h2_streams,
        "notifications": done, "elapsed_s": secs, "throughput_per_s": float(m.group(3)),
        "status_2xx": int(st.group(1)) if st else None, "failed": int(ok.group(4)),
        "cpu_s": cpu, "cpu_s_per_1000": cpu * 1000 / max(done, 1),
        "peak_rss_kb": ru.ru_maxrss, "target_cpu_s": tcpu,
    }


def bench(args, target, http, mode, rate=None, duration=None, extra=(), threads=None, stack="own"):
    """One `fleetwake bench` run; `stack` is a variant: `own`, `crates`, or
    either with `-shared` (the one work-stealing runtime instead of lanes) or
    `-normal` (lanes under the default scheduling policy, not SCHED_BATCH)."""
    stack, _, sched = stack.partition("-")
    extra = list(extra) + {"shared": ["--scheduler", "shared"],
                           "normal": ["--lane-scheduling", "normal"]}.get(sched, [])
    conns = args.h1_connections if http == "h1" else args.h2_connections
    cmd = [FLEETWAKE, "bench", "--json", "--target", f"127.0.0.1:{target.port}",
           "--ca", os.path.join(target.d, "ca.pem"), "--http", http, "--connections", str(conns),
           "--stack", stack]
    if mode == "closed":
        conc = args.h1_concurrency if http == "h1" else args.h2_connections * args.h2_streams
        cmd += ["--concurrency", str(conc)]
    else:
        cmd += ["--rate", str(int(rate))]
    cmd += ["--duration", str(duration or args.duration)]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += list(extra)
    cpu0 = target.cpu()
    code, out, wall, ru, err = run_measured(cmd, timeout=(duration or args.duration) + 120)
    tcpu = target.cpu() - cpu0
    last = [l for l in out.splitlines() if l.startswith("{")]
    if not last:
        raise SystemExit(f"fleetwake bench printed no JSON: {err[-2000:]}")
    r = json.loads(last[-1])
    r["tool"] = "fleetwake bench"
    r["stack"] = stack + (f"-{sched}" if sched else "")
    r["target_cpu_s"] = tcpu
    r["exit_code"] = code
    return r


def node_wns(args, target):
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=os.path.join(target.d, "ca.pem"),
               WNS_MODULE_DIR=WNS_DIR)
    cmd = ["node", os.path.join(HERE, "node-wns-driver.js"), str(target.port),
           str(args.node_count), str(args.node_concurrency), str(args.h1_connections)]
    cpu0 = target.cpu()
    code, out, wall, ru, err = run_measured(cmd, env=env, timeout=600)
    tcpu = target.cpu() - cpu0
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"node-wns driver printed nothing: {err[-2000:]}")
    r = json.loads(lines[-1])
    r["http"] = "h1"
    r["target_cpu_s"] = tcpu
    return r


def write_fleet(path, n):
    with open(path, "w", buffering=1 << 20) as f:
        f.write("device_id,channel_uri,tenant\n")
        chunk = []
        for i in range(n):
            chunk.append(f"dev{i},https://{CHANNEL_HOST}/?token=ok.{i},bench\n")
            if len(chunk) == 100000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


def campaign(args, target, n, work):
    fleet = os.path.join(work, f"fleet-{n}.csv")
    write_fleet(fleet, n)
    cfg = os.path.join(work, "fleetwake.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[tenants.bench]
package_sid = "ms-app://S-1-15-2-1111111111-2222222222-3333333333"
secret_env = "FLEETWAKE_BENCH_SECRET"
rate_per_second = 10000000
burst = 100000
max_in_flight = 512

[transport]
http = "{args.campaign_http}"
h2_connections_per_host = {args.h2_connections}
h1_connections_per_host = {args.h1_connections}
resolve = ["*.notify.windows.com=127.0.0.1:{target.port}", "login.live.com=127.0.0.1:{target.port}"]
extra_ca_files = ["{os.path.join(target.d, 'ca.pem')}"]
webpki_roots = false
""")
    report = os.path.join(work, f"report-{n}.jsonl")
    cmd = [FLEETWAKE, "campaign", "--progress", "none", "--restart", "--config", cfg,
           "--devices", fleet, "--report", report]
    env = dict(os.environ, FLEETWAKE_BENCH_SECRET="bench")
    cpu0 = target.cpu()
    code, out, wall, ru, err = run_measured(cmd, env=env, timeout=1800)
    tcpu = target.cpu() - cpu0
    summary = {}
    try:
        with open(report + ".summary.json") as f:
            summary = json.load(f)
    except OSError:
        pass
    cpu = rusage_cpu(ru)
    r = {
        "tool": "fleetwake campaign", "devices": n, "http": args.campaign_http, "exit_code": code,
        "elapsed_s": wall, "throughput_per_s": n / wall, "cpu_s": cpu,
        "cpu_s_per_1000": cpu * 1000 / n, "peak_rss_kb": ru.ru_maxrss,
        "fleet_file_mb": os.path.getsize(fleet) / 1e6,
        "by_outcome": summary.get("by_outcome"), "target_cpu_s": tcpu,
    }
    for p in (fleet, report):
        try:
            os.remove(p)
        except OSError:
            pass
    shutil.rmtree(report + ".actions", ignore_errors=True)
    return r


# ---------------------------------------------------------------------------
# Output


def ratio(a, b):
    return a / b if b else None


def fmt_ratio(r, target=None, higher=True):
    if r is None:
        return "n/a"
    s = f"{r:.2f}x"
    if target is not None:
        ok = r >= target if higher else r <= target
        s += f"  ({'meets' if ok else 'MISSES'} {'>=' if higher else '<='}{target}x)"
    return s


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def contenders(res, http):
    """Per contender over `http`: its best run (throughput) inside each round.

    A contender is h2load (best of -t 1 and -t 2), or fleetwake with one HTTP
    stack (best of --threads 1 and 2), or fleetwake with one stack and one
    thread count (for the two-core question)."""
    out = {}

    def add(name, r):
        rnd = r.get("round", 1)
        cur = out.setdefault(name, {}).get(rnd)
        if cur is None or r["throughput_per_s"] > cur["throughput_per_s"]:
            out[name][rnd] = dict(r, lean_cpu_s_per_1000=min(r["cpu_s_per_1000"], (cur or r).get("lean_cpu_s_per_1000", r["cpu_s_per_1000"])))
        else:
            cur["lean_cpu_s_per_1000"] = min(cur["lean_cpu_s_per_1000"], r["cpu_s_per_1000"])

    for r in res["h2load"]:
        if r["http"] == http:
            add("h2load", r)
    for r in res["bench"]:
        if r["http"] == http and r["mode"] == "closed":
            st = r.get("stack", "own")
            add(f"fleetwake/{st}", r)
            add(f"fleetwake/{st} -t{r['threads']}", r)
    return out


def stats(per_round, key="throughput_per_s", pick=None):
    vals = [(pick(r) if pick else r[key]) for r in per_round.values()]
    return {"median": median(vals), "min": min(vals), "max": max(vals), "rounds": len(vals),
            "values": [v for _, v in sorted(zip(per_round.keys(), vals))]}


def summarize(res):
    """Medians of per-round bests, their spread, and the ratios the targets name."""
    out = {"contenders": {}}
    for h in ("h2", "h1"):
        cs = contenders(res, h)
        table = {}
        for name, per_round in cs.items():
            table[name] = {
                "throughput": stats(per_round),
                # CPU per 1000 wakes of the round's leanest run (any thread
                # count): what a wake costs, apart from how many threads ran.
                "cpu_s_per_1000": stats(per_round, key="lean_cpu_s_per_1000"),
            }
        out["contenders"][h] = table
        h2l = table.get("h2load")
        for st in ("own", "crates"):
            fw = table.get(f"fleetwake/{st}")
            if not (fw and h2l):
                continue
            sfx = "" if st == "own" else "_crates"
            out[f"bench_{h}_vs_h2load{sfx}"] = ratio(fw["throughput"]["median"], h2l["throughput"]["median"])
            out[f"bench_{h}_cpu_vs_h2load{sfx}"] = ratio(fw["cpu_s_per_1000"]["median"], h2l["cpu_s_per_1000"]["median"])
            # The same ratio inside each round, for the spread.
            cs_fw, cs_h = cs[f"fleetwake/{st}"], cs["h2load"]
            out[f"bench_{h}_vs_h2load{sfx}_per_round"] = [
                ratio(cs_fw[k]["throughput_per_s"], cs_h[k]["throughput_per_s"])
                for k in sorted(cs_fw) if k in cs_h]
        own, crates = table.get("fleetwake/own"), table.get("fleetwake/crates")
        if own and crates:
            out[f"own_vs_crates_{h}"] = ratio(own["throughput"]["median"], crates["throughput"]["median"])
            out[f"own_vs_crates_{h}_cpu"] = ratio(own["cpu_s_per_1000"]["median"], crates["cpu_s_per_1000"]["median"])
        for st in ("own", "crates", "own-shared", "own-normal"):
            t1, t2 = table.get(f"fleetwake/{st} -t1"), table.get(f"fleetwake/{st} -t2")
            if t1 and t2:
                out[f"threads2_vs_threads1_{h}_{st}"] = ratio(t2["throughput"]["median"], t1["throughput"]["median"])
                a, b = cs[f"fleetwake/{st} -t2"], cs[f"fleetwake/{st} -t1"]
                out[f"threads2_vs_threads1_{h}_{st}_per_round"] = [
                    ratio(a[k]["throughput_per_s"], b[k]["throughput_per_s"]) for k in sorted(a) if k in b]
    # How busy the two cores are at one sender thread: the sender's CPU and
    # the target's, in cores (CPU seconds per second), medians over rounds.
    # When they add up to the machine, a second sender thread has no idle
    # core to use and can only take CPU from the target.
    out["cpus"] = res.get("machine", {}).get("cpus")

    def cores(r):
        n = max(r.get("notifications") or 1, 1)
        return (r["cpu_s_per_1000"] * r["throughput_per_s"] / 1000,
                r.get("target_cpu_s", 0) / n * r["throughput_per_s"])
    for h in ("h2", "h1"):
        for key, runs in (
                ("fleetwake", [r for r in res["bench"] if r["http"] == h and r["mode"] == "closed"
                               and r.get("stack", "own") == "own" and r["threads"] == 1]),
                ("h2load", [r for r in res["h2load"] if r["http"] == h and r["threads"] == 1])):
            if runs:
                cs = [cores(r) for r in runs]
                out[f"cores_at_one_thread_{h}_{key}"] = [median([c[0] for c in cs]), median([c[1] for c in cs])]
    node = res.get("node_wns")
    if node:
        best = [t["throughput"]["median"] for h in ("h2", "h1")
                for n, t in out["contenders"][h].items() if n == "fleetwake/own"]
        if best:
            out["bench_best_vs_node_wns"] = ratio(max(best), node["throughput_per_s"])
        h1 = out["contenders"]["h1"].get("fleetwake/own")
        if h1:
            out["bench_h1_vs_node_wns"] = ratio(h1["throughput"]["median"], node["throughput_per_s"])
        # The ceiling: the most the target served to any sender, over node-wns.
        lim = [t["throughput"]["median"] for h in ("h2", "h1")
               for n, t in out["contenders"][h].items() if n == "h2load"]
        if lim:
            out["h2load_vs_node_wns"] = ratio(max(lim), node["throughput_per_s"])
    camps = {c["devices"]: c for c in res.get("campaigns", [])}
    if len(camps) >= 2:
        ns = sorted(camps)
        out["campaign_rss_growth_kb"] = camps[ns[-1]]["peak_rss_kb"] - camps[ns[0]]["peak_rss_kb"]
    return out


def run_rows(res):
    """Every run, named as in the tables."""
    rows = []
    for r in res["h2load"]:
        rows.append((f"h2load -t {r['threads']} (-c {r['connections']} -m {r['streams_per_connection']}) r{r.get('round', 1)}", r))
    for r in res["bench"]:
        load = f"{r['concurrency']} in flight" if r["mode"] == "closed" else f"{r['rate']:.0f}/s"
        rnd = f" r{r['round']}" if "round" in r else ""
        rows.append((f"fleetwake bench {r.get('stack', 'own')} -t {r['threads']} {r['mode']} ({load}){rnd}", r))
    if res.get("node_wns"):
        r = res["node_wns"]
        rows.append((f"node-wns {r['version']} ({r['concurrency']} in flight)", r))
    for c in res.get("campaigns", []):
        rows.append((f"fleetwake campaign {c['devices']:,} devices", c))
    return rows


def spread(vals):
    return " ".join(f"{v:.2f}" for v in vals)


def ratio_lines(rt):
    """The ratios the targets name, as medians, with the per-round spread."""
    lines = []
    add = lines.append

    def pr(key):
        v = rt.get(key + "_per_round")
        return f"  (per round: {spread(v)})" if v else ""

    add(f"  fleetwake / h2load, HTTP/2 throughput     {fmt_ratio(rt.get('bench_h2_vs_h2load'), 0.9)}{pr('bench_h2_vs_h2load')}")
    add(f"  fleetwake / h2load, HTTP/1.1 throughput   {fmt_ratio(rt.get('bench_h1_vs_h2load'), 1.0)}{pr('bench_h1_vs_h2load')}")
    add(f"  fleetwake / node-wns throughput           {fmt_ratio(rt.get('bench_best_vs_node_wns'), 6.0)}"
        f"  (HTTP/1.1 vs HTTP/1.1: {fmt_ratio(rt.get('bench_h1_vs_node_wns'))})")
    if rt.get("h2load_vs_node_wns") is not None:
        add(f"  h2load / node-wns (the target's ceiling)   {fmt_ratio(rt['h2load_vs_node_wns'])}")
    add(f"  CPU per wake, fleetwake / h2load, HTTP/2  {fmt_ratio(rt.get('bench_h2_cpu_vs_h2load'), 1.5, higher=False)}")
    add(f"  CPU per wake, fleetwake / h2load, HTTP/1.1 {fmt_ratio(rt.get('bench_h1_cpu_vs_h2load'), 1.5, higher=False)}")
    for h, name in (("h2", "HTTP/2"), ("h1", "HTTP/1.1")):
        if f"own_vs_crates_{h}" in rt:
            add(f"  own stack / crates stack, {name:<8} throughput {fmt_ratio(rt[f'own_vs_crates_{h}'])}, "
                f"CPU per wake {fmt_ratio(rt[f'own_vs_crates_{h}_cpu'])}; crates / h2load "
                f"{fmt_ratio(rt.get(f'bench_{h}_vs_h2load_crates'))}{pr(f'bench_{h}_vs_h2load_crates')}")
    for h, name in (("h2", "HTTP/2"), ("h1", "HTTP/1.1")):
        parts = [f"{who} {c[0]:.2f} + nginx {c[1]:.2f}" for who in ("fleetwake", "h2load")
                 if (c := rt.get(f"cores_at_one_thread_{h}_{who}"))]
        if parts:
            add(f"  cores busy at one sender thread, {name:<8} {'; '.join(parts)} (of {rt.get('cpus', '?')})")
        # The most --threads 2 can reach over --threads 1: the whole machine
        # at the same CPU per wake (sender's and target's) as one thread.
        c = rt.get(f"cores_at_one_thread_{h}_fleetwake")
        if c and rt.get("cpus") and sum(c) > 0:
            add(f"  --threads 2 / --threads 1 at most, {name:<8} {fmt_ratio(rt['cpus'] / sum(c))}"
                f"  (all {rt['cpus']} cores at one thread's CPU per wake)")
    for h, name in (("h2", "HTTP/2"), ("h1", "HTTP/1.1")):
        for st in ("own", "crates", "own-shared", "own-normal"):
            k = f"threads2_vs_threads1_{h}_{st}"
            if k in rt:
                add(f"  --threads 2 / --threads 1, {name:<8} {st:<10} {fmt_ratio(rt[k], 1.0)}{pr(k)}")
    return lines


def render(res):
    rt = summarize(res)
    lines = []
    add = lines.append
    add("")
    add(f"fleetwake load test, {res['date']} on {res['machine']['cpus']} cores, target nginx {res['machine']['nginx']} (1 worker, TLS) on loopback")
    add("")
    add("Every run:")
    add(f"{'sender':<52} {'http':<5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/1k':>9} {'RSS MB':>7} {'target CPU ms/1k':>16}")
    for name, r in run_rows(res):
        lat = r.get("latency") or {}
        p50 = f"{lat['p50_ms']:.2f}" if lat else "-"
        p99 = f"{lat['p99_ms']:.2f}" if lat else "-"
        n = r.get("notifications") or r.get("devices") or 1
        tcpu = r.get("target_cpu_s", 0) * 1e6 / n
        add(f"{name:<52} {r['http']:<5} {r['throughput_per_s']:>8.0f} {p50:>8} {p99:>8} "
            f"{r['cpu_s_per_1000'] * 1000:>9.1f} {r['peak_rss_kb'] / 1024:>7.1f} {tcpu:>16.1f}")
    add("")
    add("Medians over rounds of each contender's best run in the round (spread: min..max):")
    add(f"{'contender':<30} {'http':<5} {'median req/s':>12} {'min..max':>17} {'CPU ms/1k':>9}  rounds")
    for h in ("h2", "h1"):
        for name, t in sorted(rt["contenders"][h].items()):
            th = t["throughput"]
            add(f"{name:<30} {h:<5} {th['median']:>12.0f} {th['min']:>8.0f}..{th['max']:<8.0f} "
                f"{t['cpu_s_per_1000']['median'] * 1000:>9.1f}  {th['rounds']}")
    add("")
    add("Ratios of medians (same target, same run):")
    lines += ratio_lines(rt)
    for c in res.get("campaigns", []):
        mb = c["peak_rss_kb"] / 1024
        add(f"  campaign {c['devices']:>9,} devices: peak RSS {mb:.1f} MB"
            + (f"  ({'meets' if mb < 64 else 'MISSES'} <64 MB)" if c["devices"] == 1_000_000 else ""))
    if "campaign_rss_growth_kb" in rt:
        add(f"  campaign RSS growth 1M -> 4M: {rt['campaign_rss_growth_kb'] / 1024:.1f} MB")
    add("")
    return "\n".join(lines), rt


def markdown(res):
    """The results as Markdown tables (for docs/BENCHMARKS.md)."""
    rt = summarize(res)
    out = ["| contender | http | median req/s | min–max req/s | median CPU ms per 1000 | rounds |",
           "|---|---|---:|---:|---:|---:|"]
    for h in ("h2", "h1"):
        for name, t in sorted(rt["contenders"][h].items()):
            th = t["throughput"]
            out.append(f"| {name} | {h} | {th['median']:,.0f} | {th['min']:,.0f}–{th['max']:,.0f} | "
                       f"{t['cpu_s_per_1000']['median'] * 1000:.1f} | {th['rounds']} |")
    out += ["", "```"] + [l.strip() for l in ratio_lines(rt)] + ["```", "",
            "| run | http | req/s | p50 ms | p99 ms | CPU ms per 1000 | peak RSS MB | target CPU ms per 1000 |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in run_rows(res):
        lat = r.get("latency") or {}
        p50 = f"{lat['p50_ms']:.2f}" if lat else "–"
        p99 = f"{lat['p99_ms']:.2f}" if lat else "–"
        n = r.get("notifications") or r.get("devices") or 1
        tcpu = r.get("target_cpu_s", 0) * 1e6 / max(n, 1)
        out.append(f"| {name} | {r['http']} | {r['throughput_per_s']:,.0f} | {p50} | {p99} | "
                   f"{r['cpu_s_per_1000'] * 1000:.1f} | {r['peak_rss_kb'] / 1024:.1f} | {tcpu:.1f} |")
    return "\n".join(out) + "\n"


def svg_chart(res, path):
    bars = []
    for r in res["h2load"]:
        bars.append((f"h2load {r['http']} -t{r['threads']}", r["throughput_per_s"], "#888888"))
    for r in res["bench"]:
        bars.append((f"fleetwake {r.get('stack', 'own')} {r['http']} {r['mode']} -t{r['threads']}", r["throughput_per_s"], "#2a6fdb"))
    if res.get("node_wns"):
        bars.append(("node-wns h1", res["node_wns"]["throughput_per_s"], "#d9822b"))
    for c in res.get("campaigns", []):
        bars.append((f"campaign {c['devices'] // 1000000}M", c["throughput_per_s"], "#3a9d5d"))
    top = max(b[1] for b in bars) or 1
    w, lh, left = 820, 26, 250
    h = 60 + lh * len(bars)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">Throughput against nginx (TLS, loopback), {res["date"]}</text>',
           f'<text x="10" y="38" fill="#555">requests per second; 2 cores shared by sender and target</text>']
    for i, (name, v, color) in enumerate(bars):
        y = 50 + i * lh
        bw = (w - left - 90) * v / top
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{name}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{lh - 8}" fill="{color}"/>')
        out.append(f'<text x="{left + bw + 6:.1f}" y="{y + 15}">{v:,.0f}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------------------


def open_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def set_autogroup_nice(n):
    """Sets this session's autogroup niceness; returns the previous one (None if unsupported)."""
    path = "/proc/self/autogroup"
    try:
        with open(path) as f:
            before = int(f.read().split("nice")[1])
        with open(path, "w") as f:
            f.write(str(n))
        return before
    except (OSError, ValueError, IndexError):
        return None


def machine():
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    h2l_v = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    fw_v = subprocess.run([FLEETWAKE, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "nginx": nginx_v, "h2load": h2l_v,
            "fleetwake": fw_v, "commit": commit, "load_before": os.getloadavg(),
            "niceness": os.nice(0), "autogroup": open_text("/proc/self/autogroup")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10, help="seconds per fleetwake bench run")
    ap.add_argument("--h2load-requests", type=int, default=500_000, help="requests per h2load run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3); each contender's figure is the median of its per-round bests")
    ap.add_argument("--stacks", default="own,crates,own-shared,own-normal", help="fleetwake variants to measure, comma separated: own (the project's HTTP codecs), crates (h2 and hyper), either with -shared (one work-stealing runtime instead of engine lanes) or -normal (lanes under the default scheduling policy instead of SCHED_BATCH); the first is the headline")
    ap.add_argument("--h2-connections", type=int, default=4)
    ap.add_argument("--h2-streams", type=int, default=100, help="h2load -m; fleetwake closed loop keeps connections x streams in flight")
    ap.add_argument("--h1-connections", type=int, default=64)
    ap.add_argument("--h1-concurrency", type=int, default=64, help="fleetwake closed loop in flight over HTTP/1.1 (default: as h2load --h1 -c 64 -m 1)")
    ap.add_argument("--open-fraction", type=float, default=0.8, help="open-loop rate as a fraction of the closed-loop rate")
    ap.add_argument("--node-count", type=int, default=200_000)
    ap.add_argument("--node-concurrency", type=int, default=256)
    ap.add_argument("--campaign", type=str, default="1000000,4000000", help="campaign sizes, comma separated ('' skips)")
    ap.add_argument("--campaign-http", default="http2", choices=["http1", "http2", "auto"])
    ap.add_argument("--only", default="", help="comma list of h2load,bench,node,campaign (default all)")
    ap.add_argument("--soak", action="store_true", help="run the 5-minute soak instead")
    ap.add_argument("--markdown", metavar="RESULTS_JSON", help="print the Markdown table of an earlier run and exit")
    ap.add_argument("--soak-seconds", type=float, default=300)
    ap.add_argument("--soak-rate", type=float, default=None, help="soak rate (default 80%% of the median of three fresh closed-loop h2 runs)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--nice", type=int, default=-15, help="niceness increment when run as root (0: leave it)")
    args = ap.parse_args()
    if args.rounds < 3 and not (args.soak or args.markdown):
        ap.error("--rounds must be at least 3 (the figures are medians over rounds)")
    only = set(filter(None, args.only.split(","))) or {"h2load", "bench", "node", "campaign"}
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)), end="")
        return
    autogroup_before = None
    if args.nice and os.geteuid() == 0:
        # Everything this script starts inherits the priority, target and senders
        # alike, so builds running beside the load test disturb it less. With
        # autogroup scheduling, nice only ranks processes within one session, so
        # the session's autogroup is raised too (and restored at the end).
        os.nice(args.nice)
        autogroup_before = set_autogroup_nice(args.nice)

    work = tempfile.mkdtemp(prefix="fleetwake-loadtest-")
    target = None
    try:
        make_certs(work)
        with open(os.path.join(work, "payload"), "wb") as f:
            f.write(PAYLOAD)
        port = free_port()
        target = Nginx(work, port)
        log(f"nginx (PID {target.p.pid}) on 127.0.0.1:{port}, files in {work}")
        date = dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        res = {"date": date, "machine": machine(), "h2load": [], "bench": [], "campaigns": []}
        os.makedirs(args.results, exist_ok=True)

        if args.soak:
            rate = args.soak_rate
            if rate is None:
                log("soak: measuring the closed-loop rate over HTTP/2 (3 runs of 5 s, the median counts)")
                tops = sorted((bench(args, target, "h2", "closed", duration=5, threads=1) for _ in range(3)),
                              key=lambda r: r["throughput_per_s"])
                res["bench"].extend(tops)
                rate = 0.8 * tops[1]["throughput_per_s"]
            log(f"soak: {args.soak_seconds:.0f} s at {rate:.0f}/s over HTTP/2, one line per 10 s")
            r = bench(args, target, "h2", "open", rate=rate, duration=args.soak_seconds,
                      extra=["--interval", "10"], threads=1)
            res["soak"] = r
            for i in r["intervals"]:
                log(f"  t={i['t_s']:6.0f}s {i['throughput_per_s']:9.0f}/s p50 {i['latency']['p50_ms']:7.2f} ms "
                    f"p99 {i['latency']['p99_ms']:7.2f} ms max {i['latency']['max_ms']:8.2f} ms rss {i['rss_kb'] / 1024:6.1f} MB")
            path = os.path.join(args.results, f"soak-{date}.json")
            with open(path, "w") as f:
                json.dump(res, f, indent=1)
            print(f"wrote {path}")
            return

        # Interleaved rounds: inside a round, per protocol, h2load and each
        # fleetwake stack take turns (-t 1, then -t 2). Each contender's best
        # run inside a round counts for that round, and the median over the
        # rounds is its figure; load from outside the test then hits every
        # contender alike, and the spread shows how far to trust the median.
        best = {}
        stacks = [s for s in args.stacks.split(",") if s]
        for rnd in range(1, args.rounds + 1):
            for http in ("h2", "h1"):
                for t in (1, 2):
                    if "h2load" in only:
                        log(f"[round {rnd}] h2load {'--h1' if http == 'h1' else 'h2'} -t {t}")
                        r = h2load(args, target, http == "h1", t, args.h2load_requests)
                        r["round"] = rnd
                        log(f"  {r['throughput_per_s']:.0f} req/s, {r['cpu_s_per_1000']:.4f} CPU s/1000")
                        res["h2load"].append(r)
                    if "bench" not in only:
                        continue
                    for stack in stacks:
                        log(f"[round {rnd}] fleetwake bench {http} {stack} stack, closed loop, --threads {t}, {args.duration:.0f} s")
                        c = bench(args, target, http, "closed", threads=t, stack=stack)
                        c["round"] = rnd
                        log(f"  {c['throughput_per_s']:.0f}/s, p50 {c['latency']['p50_ms']:.2f} ms, {c['cpu_s_per_1000']:.4f} CPU s/1000")
                        res["bench"].append(c)
                        if stack == stacks[0]:
                            best.setdefault(http, {}).setdefault(rnd, []).append(c)
        if "bench" in only:
            for http in ("h2", "h1"):
                # The headline contender's median round (its best run in each
                # round, the median of those): the open loop runs at a
                # fraction of a typical rate, not of the luckiest one.
                tops = sorted((max(rs, key=lambda r: r["throughput_per_s"]) for rs in best[http].values()),
                              key=lambda r: r["throughput_per_s"])
                b = tops[len(tops) // 2]
                rate = args.open_fraction * b["throughput_per_s"]
                log(f"fleetwake bench {http} open loop at {rate:.0f}/s, --threads {b['threads']}, {args.duration:.0f} s")
                o = bench(args, target, http, "open", rate=rate, threads=b["threads"], stack=stacks[0])
                log(f"  {o['throughput_per_s']:.0f}/s, p50 {o['latency']['p50_ms']:.2f} ms, p99 {o['latency']['p99_ms']:.2f} ms")
                res["bench"].append(o)
        if "node" in only:
            log(f"node-wns: {args.node_count} sendRaw, {args.node_concurrency} in flight, {args.h1_connections} sockets")
            res["node_wns"] = node_wns(args, target)
            log(f"  {res['node_wns']['throughput_per_s']:.0f}/s")
        if "campaign" in only:
            for n in [int(x) for x in args.campaign.split(",") if x.strip()]:
                log(f"fleetwake campaign, {n:,} devices from a file")
                c = campaign(args, target, n, work)
                log(f"  {c['throughput_per_s']:.0f}/s, peak RSS {c['peak_rss_kb'] / 1024:.1f} MB")
                res["campaigns"].append(c)

        table, ratios = render(res)
        res["ratios"] = ratios
        print(table)
        path = os.path.join(args.results, f"{date}.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        svg = os.path.join(args.results, f"{date}.svg")
        svg_chart(res, svg)
        with open(os.path.join(args.results, f"{date}.txt"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.results, f"{date}.md"), "w") as f:
            f.write(markdown(res))
        print(f"wrote {path}, {svg}")
    finally:
        if autogroup_before is not None:
            set_autogroup_nice(autogroup_before)
        if target:
            target.stop()
        for pid in list(STARTED):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
