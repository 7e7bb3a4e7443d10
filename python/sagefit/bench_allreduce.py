"""Gradient all-reduce bus bandwidth: sagefit's gRPC ring against TensorFlow.

    python -m sagefit.bench_allreduce --helper .bench/distributed.test \\
        [--plot .bench/allreduceplot --png docs/allreduce.png] [--markdown BENCHMARKS.md]

(``make bench-allreduce`` runs it through scripts/bench-allreduce.sh, which
builds the two Go programs first.)

For n = 2, 3, 4 ranks on loopback, every rank its own OS process, it
measures in turn, and ``--rounds`` times over, interleaved:

- the raw TCP bound: the distributed test binary as a plain TCP pump, each
  rank streaming to the next while receiving from the previous one, the
  traffic of a ring all-reduce; its rate per link is the most a ring's
  busbw can reach on this machine. Once cycling one 1 MiB buffer (in cache,
  as iperf3's buffer is), and once per size from 4 MiB moving buffers of
  that size (what sending and receiving an all-reduce's buffer costs the
  same kernel; iperf3 caps its buffer at 1 MiB);
- sagefit: the same binary joining the ring with ``transport.Join`` over
  real gRPC and timing ``Group.AllReduce`` (Sum, float32), with the chunks
  on the data lanes (the default) and, unless ``--no-grpc-data``, again
  with them on the gRPC streams (``sagefit_allreduce_transport=grpc``);
- the bare ring: the same binary running sagefit's ring all-reduce (same
  pieces, chunks and order of sums) on plain TCP with nothing but reads,
  sums and writes: a yardstick for what a ring all-reduce can reach on
  this machine;
- TensorFlow: n workers under ``MultiWorkerMirroredStrategy`` with
  ``CommunicationImplementation.RING``, timing
  ``get_replica_context().all_reduce(SUM, t)`` inside ``strategy.run`` in a
  ``tf.function``.

Each size is timed as ``samples`` runs of ``ops`` back-to-back all-reduces
(after one untimed warm-up run), each run starting after a barrier; a run's
time is the slowest rank's, the result is the median run. Bus bandwidth as
nccl-tests defines it: busbw = S/t x 2(n-1)/n, the rate at which each link
of the ring carries data, comparable with the link's own rate.

With root and iproute2, ``--netns`` also runs the ring (and the pump)
between network namespaces joined by a bridge, every veth shaped with
``tc tbf`` to ``--rate`` (1 Gbit/s): the ring's busbw bound is then the
link rate. All traffic stays on 127.0.0.0/8 or inside those namespaces
(192.0.2.0/24, TEST-NET-1).
"""

import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from sagefit._procs import kill_groups, read_all
from sagefit.bench import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BEGIN = "<!-- allreduce:begin -->"
END = "<!-- allreduce:end -->"
KiB, MiB = 1 << 10, 1 << 20
SIZES = [4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB]
NETNS_SIZES = [1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB]
HELPER_TEST = "^TestBenchAllReduceHelper$"
RUN_TIMEOUT = 600  # seconds for one set of rank processes; every wait is bounded


def plan_for(sizes):
    """(bytes, ops, samples) per size: enough back-to-back ops that a timed
    run of a small size is not all timer and barrier; fewer samples where
    one op takes a second."""
    plan = []
    for b in sizes:
        ops = max(1, min(64, (4 * MiB) // b))
        samples = 9 if b <= 16 * MiB else 5 if b <= 64 * MiB else 3
        plan.append((b, ops, samples))
    return plan


def plan_str(plan):
    return ",".join(f"{b}:{o}:{s}" for b, o, s in plan)


def size_name(b):
    if b >= MiB:
        return f"{b // MiB} MiB"
    return f"{b // KiB} KiB"


def busbw(nbytes, seconds, n):
    return nbytes / seconds * 2 * (n - 1) / n / 1e6


# ---------------------------------------------------------------- TF peer


TF_DONE = "TF_WORKER_DONE"  # a TensorFlow worker has printed all its results and waits to be stopped


def tf_worker(index, workers, plan):
    """One worker of TensorFlow's own multi-worker all-reduce."""
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
    import tensorflow as tf

    comm = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    SUM = tf.distribute.ReduceOp.SUM
    n = strategy.num_replicas_in_sync

    def local(r):
        return strategy.experimental_local_results(r)[0]

    @tf.function(autograph=False)
    def barrier():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(SUM, tf.ones([1])))

    def make_step(ops):
        def replica_fn(t):
            ctx = tf.distribute.get_replica_context()
            t = tf.identity(t)  # placed on the replica's device (no copy): all_reduce needs one
            for _ in range(ops):  # a chain: each all-reduce waits for the one before
                t = ctx.all_reduce(SUM, t)
            return t[0]

        @tf.function(autograph=False)
        def step(t):
            return strategy.run(replica_fn, args=(t,))

        return step

    if index == 0:
        print(json.dumps({"tf_version": tf.__version__}), flush=True)
    for nbytes, ops, samples in plan:
        x = tf.ones([nbytes // 4], tf.float32)

        step = make_step(ops)
        per_op = []
        for s in range(-1, samples):  # -1: warm-up (traces the function)
            local(barrier()).numpy()
            t0 = time.perf_counter()
            local(step(x)).numpy()
            if s >= 0:
                per_op.append((time.perf_counter() - t0) / ops)
        print(json.dumps({"impl": "tensorflow", "rank": index, "n": n, "bytes": nbytes,
                          "ops": ops, "sample_s": per_op}), flush=True)
        del x, step
    local(barrier()).numpy()
    print(TF_DONE, flush=True)
    # Stay up until the driver has every worker's results: a worker that
    # leaves takes its gRPC server with it while a peer may still be
    # receiving the last chunk of the final barrier from it (as in
    # mwms_compare). The driver kills the workers; if it is gone, stdin
    # closes and the worker leaves by itself. os._exit because TensorFlow's
    # gRPC server can hold a clean exit long after the peers are gone.
    sys.stdin.read()
    os._exit(0)


# ---------------------------------------------------------------- running ranks


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


LOG_DIR = None  # where each rank's stderr goes (set by main)


def run_ranks(cmds, what, timeout=RUN_TIMEOUT, done=None):
    """Start every (argv, env) at once; return their stdout texts, once each
    has exited, or, with done, printed a line done (the rank then waits for
    the others and is stopped here). Any failure, or the timeout, stops all
    of them and raises naming the rank. Each rank's stderr is kept in
    LOG_DIR."""
    procs, outs, errs = [], [], []
    tag = re.sub(r"[^A-Za-z0-9=.-]+", "_", what)

    try:
        for r, (argv, env) in enumerate(cmds):
            err = open(os.path.join(LOG_DIR, f"{tag}-rank{r}.log"), "w+")
            errs.append(err)
            out = tempfile.TemporaryFile("w+")
            outs.append(out)
            procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                          text=True, start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            exited = [p.poll() is not None for p in procs]
            texts = [read_all(o) for o in outs]  # read after the poll: an exited rank's is whole
            finished = [done in t.splitlines() if done else x for x, t in zip(exited, texts)]
            for r, p in enumerate(procs):
                if exited[r] and (p.returncode != 0 or not finished[r]):
                    lines = [l for l in (texts[r] + "\n" + read_all(errs[r])).splitlines() if l.strip()]
                    raise RuntimeError(f"{what}: rank {r} exited {p.returncode}: " + " | ".join(lines[-6:]))
            if all(finished):
                return texts
            if time.monotonic() > deadline:
                r = finished.index(False)
                raise RuntimeError(f"{what}: rank {r} still running after {timeout} s")
            time.sleep(0.1)
    finally:
        kill_groups(procs)
        for p in procs:
            p.stdin.close()
        for f in outs + errs:
            f.close()


def records(outs):
    recs = []
    for out in outs:
        for line in out.splitlines():
            if line.startswith("{"):
                recs.append(json.loads(line))
    return recs


def rank_env(extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def in_ns(ns, argv):
    return ["ip", "netns", "exec", ns] + argv if ns else argv


def hosts_addrs(ips):
    return {f"algo-{r + 1}": f"{ip}:{free_port(ip) if ip.startswith('127.') else 7001}"
            for r, ip in enumerate(ips)}


def go_ranks(helper, mode, ips, extra, namespaces=None):
    addrs = hosts_addrs(ips)
    pairs = ",".join(f"{h}={a}" for h, a in addrs.items())
    cmds = []
    for r, h in enumerate(addrs):
        env = rank_env({"SAGEFIT_BENCH_HELPER": mode, "SAGEFIT_BENCH_SELF": h,
                        "SAGEFIT_HOST_ADDRS": pairs, **extra})
        argv = [helper, f"-test.run={HELPER_TEST}", "-test.count=1"]
        cmds.append((in_ns(namespaces[r] if namespaces else None, argv), env))
    return records(run_ranks(cmds, f"{mode} n={len(ips)}"))


def pump(helper, ips, seconds, namespaces=None, span=None):
    start = time.time_ns() + 2_000_000_000  # time for every rank to connect
    extra = {"SAGEFIT_BENCH_START_NS": start, "SAGEFIT_BENCH_SECONDS": seconds}
    if span:
        extra["SAGEFIT_BENCH_SPAN"] = span
    recs = go_ranks(helper, "pump", ips, extra, namespaces)
    return statistics.mean(r["MBps"] for r in recs)  # per link, all links busy at once


RING_ENV = {}  # experiments: SAGEFIT_BENCH_WINDOW, SAGEFIT_BENCH_CHUNK


def sagefit_ring(helper, ips, plan, namespaces=None, data="lane"):
    extra = {"SAGEFIT_BENCH_PLAN": plan_str(plan), **RING_ENV}
    if data == "grpc":  # chunks on the gRPC streams (sagefit_allreduce_transport=grpc)
        extra["SAGEFIT_BENCH_DATA"] = "grpc"
    return go_ranks(helper, "ring", ips, extra, namespaces)


def bare_ring(helper, ips, plan):
    """sagefit's ring layout with nothing but reads, sums and writes: a yardstick for any ring here."""
    return go_ranks(helper, "bare", ips, {"SAGEFIT_BENCH_PLAN": plan_str(plan)})


def tensorflow_ring(ips, plan):
    workers = [f"{ip}:{free_port(ip)}" for ip in ips]
    plan_json = json.dumps(plan)
    cmds = [([sys.executable, "-m", "sagefit.bench_allreduce", "--tf-worker", str(i),
              "--tf-workers", ",".join(workers), "--tf-plan", plan_json],
             rank_env({"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                       "CUDA_VISIBLE_DEVICES": ""}))
            for i in range(len(ips))]
    return records(run_ranks(cmds, f"tensorflow n={len(ips)}", done=TF_DONE))


class Samples:
    """Per (setting, impl, n, bytes): the slowest rank of every timed run."""

    def __init__(self):
        self.runs = {}
        self.tcp = {}

    def add(self, setting, recs):
        by = {}
        for r in recs:
            if "sample_s" in r:
                by.setdefault((r["impl"], r["n"], r["bytes"]), []).append(r["sample_s"])
        for (impl, n, b), ranks in by.items():
            slowest = [max(s) for s in zip(*ranks)]
            self.runs.setdefault((setting, impl, n, b), []).extend(slowest)

    def add_tcp(self, setting, n, mbps, span=MiB):
        self.tcp.setdefault((setting, n, span), []).append(mbps)

    def table(self):
        out = []
        for (setting, impl, n, b), runs in sorted(self.runs.items()):
            t = statistics.median(runs)
            out.append({"setting": setting, "impl": impl, "n": n, "bytes": b, "runs": len(runs),
                        "seconds": t, "busbw_MBps": busbw(b, t, n), "algbw_MBps": b / t / 1e6})
        for (setting, n, span), v in sorted(self.tcp.items()):
            row = {"setting": setting, "n": n, "runs": len(v),
                   "busbw_MBps": statistics.median(v), "all_MBps": v}
            if span == MiB:  # "tcp": the 1 MiB-buffer bound, one per n
                out.append({**row, "impl": "tcp", "bytes": 0})
            if setting == "loopback":  # "tcp-sized": moving buffers of each size
                out.append({**row, "impl": "tcp-sized", "bytes": span})
        return out


def busy_fraction(interval=0.5):
    """Share of this machine's CPU time used (by anyone) over interval."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = read()
    time.sleep(interval)
    t1, i1 = read()
    return 1 - (i1 - i0) / max(1, t1 - t0)


QUIET_BUDGET = [180.0]  # seconds of waiting for quiet left in this run


def wait_quiet(log, limit=20.0, threshold=0.15):
    """Wait a little (at most limit seconds, and 180 s over the whole run)
    for other work to leave the CPUs nearly idle, so it competes less with
    the ranks; return the busy share seen last (the report says how busy
    the machine was)."""
    start = time.monotonic()
    deadline = start + min(limit, QUIET_BUDGET[0])
    while True:
        busy = busy_fraction()
        if busy <= threshold or time.monotonic() > deadline:
            QUIET_BUDGET[0] = max(0.0, QUIET_BUDGET[0] - (time.monotonic() - start))
            if busy > threshold:
                log(f"machine still {100 * busy:.0f}% busy with other work; measuring anyway")
            return busy
        time.sleep(1)


# ---------------------------------------------------------------- netns


class Netns:
    """n hosts, each in its own namespace at 192.0.2.(i+1), joined by a
    bridge in a switch namespace; both ends of every veth shaped to rate."""

    def __init__(self, n, rate):
        tag = os.getpid() % 100000
        self.sw = f"sfbench-{tag}-sw"
        self.hosts = [f"sfbench-{tag}-h{i + 1}" for i in range(n)]
        self.links = [(f"sfb{tag}h{i + 1}", f"sfb{tag}s{i + 1}") for i in range(n)]
        self.ips = [f"192.0.2.{i + 1}" for i in range(n)]
        self.rate = rate
        self.made = []

    def _ip(self, *args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def __enter__(self):
        try:
            for ns in [self.sw] + self.hosts:
                self._ip("netns", "add", ns)
                self.made.append(ns)
                self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", self.sw, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.sw, "link", "set", "br0", "up")
            tbf = ["root", "tbf", "rate", self.rate, "burst", "256kb", "latency", "50ms"]
            for ns, (h, s), ip in zip(self.hosts, self.links, self.ips):
                self._ip("link", "add", h, "netns", ns, "type", "veth", "peer", "name", s, "netns", self.sw)
                self._ip("-n", ns, "addr", "add", ip + "/24", "dev", h)
                self._ip("-n", ns, "link", "set", h, "up")
                self._ip("-n", self.sw, "link", "set", s, "master", "br0")
                self._ip("-n", self.sw, "link", "set", s, "up")
                for where, dev in ((ns, h), (self.sw, s)):
                    subprocess.run(["ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, *tbf],
                                   check=True, capture_output=True, text=True, timeout=30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []


def netns_unavailable():
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"needs `{tool}` (iproute2)"
    return None


def rate_bytes(rate):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not m:
        raise ValueError(f"rate {rate!r}: want e.g. 1gbit or 500mbit")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


# ---------------------------------------------------------------- report


def versions():
    v = {}
    try:
        v["go"] = subprocess.run(["go", "version"], capture_output=True, text=True,
                                 timeout=30).stdout.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    try:
        m = re.search(r"google\.golang\.org/grpc (v\S+)", open("go.mod").read())
        v["grpc-go"] = m.group(1) if m else None
    except OSError:
        pass
    return v


def busy_summary(busy, threshold=0.15):
    if not busy:
        return "not sampled"
    k = sum(b > threshold for b in busy)
    return (f"other work kept the CPUs over {100 * threshold:.0f}% busy just before "
            f"{k} of the {len(busy)} measurements")


def fmt(x):
    return f"{x:,.0f}" if x is not None else "-"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def pct(a, b):
    return f"{100 * a / b:.0f}%" if a and b else "-"


def report(res, meta):
    rows = res["results"]

    def get(setting, impl, n, b=0):
        for r in rows:
            if (r["setting"], r["impl"], r["n"], r["bytes"]) == (setting, impl, n, b):
                return r["busbw_MBps"]
        return None

    ranks = meta["ranks"]
    sizes = sorted({r["bytes"] for r in rows if r["setting"] == "loopback" and r["bytes"]})
    L = []
    L.append("## Gradient all-reduce: `make bench-allreduce`")
    L.append("")
    L.append(
        f"Measured {meta['date']} on {meta['machine']}; Go {meta.get('go', '?')}, "
        f"grpc-go {meta.get('grpc-go', '?')}, TensorFlow {meta.get('tf_version', '?')} (CPU wheel). "
        f"Load average before the run: {meta['load_before']}; "
        f"{busy_summary(meta.get('busy_before', []))} (each waited up to 20 s for quiet). "
        f"{meta['rounds']} round(s), interleaved (TCP pump, sagefit, bare ring, sagefit on gRPC streams, TensorFlow for each n in turn); "
        f"{meta['minutes']:.1f} minutes in all.")
    L.append("")
    L.append(
        "Bus bandwidth as nccl-tests defines it, busbw = S/t x 2(n-1)/n, in MB/s (10^6 B/s): "
        "the rate each link of the ring carries, so it compares across n and with a link's "
        "own rate. Every rank is its own OS process on loopback (127.0.0.1-n), float32 Sum; "
        "per size, the median over timed runs of the slowest rank (runs of back-to-back ops "
        "for small sizes, each after a barrier; one warm-up run first). "
        "**sagefit**: the `distributed` test binary re-executed as each host, joined with "
        "`transport.Join` (package distributed/transport) over real gRPC, timing `Group.AllReduce` with its default transport "
        "(chunks on a plain TCP data lane beside each gRPC link); the series with the chunks on "
        "the gRPC streams themselves ran beside it. **bare ring**: the same binary running the ring "
        "all-reduce with sagefit's pieces, chunks and order of sums (bit-identical results) on one plain "
        "TCP connection per link and nothing else: one goroutine reads a chunk, sums it and queues it "
        "on, another writes; no frames, sequence numbers, liveness or fault handling, so it is a "
        "yardstick for what a ring all-reduce can reach on this machine. **TensorFlow**: "
        "`MultiWorkerMirroredStrategy` with `CommunicationImplementation.RING`, "
        "`get_replica_context().all_reduce(SUM, t)` in `strategy.run` inside a `tf.function` "
        "(TensorFlow's default threads). **raw TCP**: the same binary as a plain TCP pump, "
        "every rank writing 1 MiB blocks to the next while reading 1 MiB blocks from the previous one "
        "(the traffic of a ring all-reduce), the mean rate per link with all links busy: "
        "the most busbw can be on this machine; measured two ways: cycling one 1 MiB buffer, "
        "which stays in cache (as iperf3's buffer, at most 1 MiB, does), and, per size, moving "
        "buffers of that size (successive 1 MiB blocks of it), which is what sending and "
        "receiving an all-reduce's buffer costs the same kernel: its bytes must come from and "
        "go to memory.")
    L.append("")
    L.append("![busbw against size](docs/allreduce.png)")
    L.append("")
    head = "| size |" + "".join(f" n={n} sagefit | n={n} TF | n={n} sagefit/TF |" for n in ranks)
    L.append(head)
    L.append("|---|" + "---|---|---|" * len(ranks))
    for b in sizes:
        cells = []
        for n in ranks:
            s, t = get("loopback", "sagefit", n, b), get("loopback", "tensorflow", n, b)
            cells += [fmt(s), fmt(t), ratio(s, t)]
        L.append(f"| {size_name(b)} | " + " | ".join(cells) + " |")
    cells = []
    for n in ranks:
        cells += [fmt(get("loopback", "tcp", n)), "", ""]
    L.append("| raw TCP, per link | " + " | ".join(cells) + " |")
    L.append("")
    L.append("sagefit busbw as a share of raw TCP on the same machine: of the pump cycling a 1 MiB "
             "buffer / of the pump moving buffers of the size (that pump's busbw in brackets):")
    L.append("")
    def size_table(cell):
        """One row per size from 1 MiB, one cell(n, b) per n."""
        L.append("| size | " + " | ".join(f"n={n}" for n in ranks) + " |")
        L.append("|---|" + "---|" * len(ranks))
        for b in sizes:
            if b >= MiB:
                L.append(f"| {size_name(b)} | " + " | ".join(cell(n, b) for n in ranks) + " |")
        L.append("")

    def shares(impl, n, b):
        s = get("loopback", impl, n, b)
        return f"{pct(s, get('loopback', 'tcp', n))} / {pct(s, get('loopback', 'tcp-sized', n, b))}"

    size_table(lambda n, b: f"{shares('sagefit', n, b)} ({fmt(get('loopback', 'tcp-sized', n, b))})")
    has_bare = any(r["impl"] == "bare-ring" for r in rows)
    if has_bare:
        L.append("The bare ring, a yardstick for what a ring can reach here: its busbw, its share of the 1 MiB-buffer pump "
                 "/ of the pump moving buffers of the size, and sagefit's busbw as a share of it:")
        L.append("")
        size_table(lambda n, b: f"{fmt(get('loopback', 'bare-ring', n, b))}: {shares('bare-ring', n, b)}; "
                                f"sagefit {pct(get('loopback', 'sagefit', n, b), get('loopback', 'bare-ring', n, b))}")
    if any(r["impl"] == "sagefit-grpc" for r in rows):
        L.append("With the chunks on the gRPC streams (`sagefit_allreduce_transport=grpc`): busbw and "
                 "share of the 1 MiB-buffer pump / of the pump moving buffers of the size:")
        L.append("")
        size_table(lambda n, b: f"{fmt(get('loopback', 'sagefit-grpc', n, b))}: {shares('sagefit-grpc', n, b)}")

    # targets
    def verdict(ok):
        return "met" if ok else "**missed**"

    peer_fail, tcp_fail, cached_fail, bare_fail, shares = [], [], [], [], []
    for n in ranks:
        for b in sizes:
            s, t = get("loopback", "sagefit", n, b), get("loopback", "tensorflow", n, b)
            if b >= MiB and s and t and s < t:
                peer_fail.append(f"n={n} {size_name(b)} ({s / t:.2f}x)")
            c, sized = get("loopback", "tcp", n), get("loopback", "tcp-sized", n, b)
            if b >= 16 * MiB and s and sized:
                shares.append(s / sized)
                if s < 0.7 * sized:
                    tcp_fail.append(f"n={n} {size_name(b)} ({100 * s / sized:.0f}%)")
            if b >= 16 * MiB and s and c and s < 0.7 * c:
                cached_fail.append(f"n={n} {size_name(b)} ({100 * s / c:.0f}%)")
            bare = get("loopback", "bare-ring", n, b)
            if b >= 16 * MiB and bare and c and bare < 0.7 * c:
                bare_fail.append(f"n={n} {size_name(b)} ({100 * bare / c:.0f}%)")
    L.append("| target | result |")
    L.append("|---|---|")
    L.append(f"| at or above TensorFlow at every size from 1 MiB | {verdict(not peer_fail)}"
             + (": below at " + ", ".join(peer_fail) if peer_fail else "") + " |")
    span = f" ({100 * min(shares):.0f}-{100 * max(shares):.0f}%)" if shares else ""
    L.append(f"| at least 70% of raw TCP busbw from 16 MiB (the pump moving buffers of the size) | "
             f"{verdict(shares and not tcp_fail)}{span if not tcp_fail else ''}"
             + (": " + ", ".join(tcp_fail) if tcp_fail else "") + " |")
    bare_note = ""
    if has_bare:
        bare_note = ("; the bare ring falls short of it too at " + ", ".join(bare_fail) if bare_fail
                     else "; the bare ring reaches it everywhere")
    L.append(f"| the same against the pump cycling a 1 MiB buffer in cache | {verdict(not cached_fail)}"
             + (": " + ", ".join(cached_fail) if cached_fail else "") + bare_note + " |")
    ns_rows = [r for r in rows if r["setting"] == "netns"]
    if ns_rows:
        bound = meta["rate_Bps"] / 1e6
        ns_ranks = sorted({r["n"] for r in ns_rows})
        top = max(r["bytes"] for r in ns_rows)
        best = {n: get("netns", "sagefit", n, top) or 0 for n in ns_ranks}
        ok = all(best[n] >= 0.9 * bound for n in ns_ranks)
        L.append(f"| at least 90% of a {meta['rate']} link's bound ({size_name(top)}) | {verdict(ok)}: "
                 + ", ".join(f"n={n} {100 * best[n] / bound:.1f}%" for n in ns_ranks) + " |")
    L.append("")

    if ns_rows:
        bound = meta["rate_Bps"] / 1e6
        ns_ranks = sorted({r["n"] for r in ns_rows})
        L.append(f"### Bandwidth-limited: {meta['rate']} links")
        L.append("")
        L.append(
            f"Each host in its own network namespace (192.0.2.x), joined by a bridge in a "
            f"switch namespace; both ends of every veth shaped with `tc qdisc add dev X root tbf "
            f"rate {meta['rate']} burst 256kb latency 50ms`. For a ring, the busbw bound is the "
            f"link rate, {bound:,.0f} MB/s of frames (TCP/IP headers included, so TCP "
            f"payload tops out near 1448/1514 of it). Same binary and method as above.")
        L.append("")
        L.append("| size | " + " | ".join(f"n={n} busbw | n={n} % of link | n={n} % of TCP" for n in ns_ranks) + " |")
        L.append("|---|" + "---|---|---|" * len(ns_ranks))
        ns_sizes = sorted({r["bytes"] for r in ns_rows if r["bytes"]})
        for b in ns_sizes:
            cells = []
            for n in ns_ranks:
                s, c = get("netns", "sagefit", n, b), get("netns", "tcp", n)
                cells += [fmt(s), pct(s, bound), pct(s, c)]
            L.append(f"| {size_name(b)} | " + " | ".join(cells) + " |")
        cells = []
        for n in ns_ranks:
            cells += [fmt(get("netns", "tcp", n)), pct(get("netns", "tcp", n), bound), ""]
        L.append("| raw TCP, per link | " + " | ".join(cells) + " |")
        L.append("")
    L.append("Notes:")
    L.append("")
    L.append(
        "- On this machine every rank, of every implementation, shares the same 2 cores: all "
        "loopback numbers are CPU-bound, not network-bound (raw TCP per link falls as n grows "
        "because the links share the cores). sagefit, the bare ring, TensorFlow and the pump ran one after "
        "the other, never at once, but other work on the machine (the busy share above) "
        "competed with each of them.")
    L.append(
        "- Raw TCP is a loose bound either way: the pump only moves bytes, while a ring all-reduce "
        "also sums them on the same cores (on the data lane with no copy in user space; on the gRPC "
        "streams through HTTP/2 framing and buffer copies). The 1 MiB-buffer pump also never reads "
        "or writes memory: its buffer stays in cache, so on this machine it moves "
        + ", ".join(f"{pct(get('loopback', 'tcp', n) - get('loopback', 'tcp-sized', n, 64 * MiB), get('loopback', 'tcp-sized', n, 64 * MiB))} (n={n})"
                    for n in ranks if get("loopback", "tcp", n) and get("loopback", "tcp-sized", n, 64 * MiB))
        + " more than the same pump moving 64 MiB buffers, which no all-reduce of 64 MiB can avoid. "
        "The bare ring measures what the sums and the ring's order leave of either bound; sagefit's "
        "share of it is what its framing, sequencing, liveness and fault handling cost. "
        "Where sagefit's CPU goes: distributed/BENCHMARKS.md.")
    L.append(
        "- torch.distributed (gloo) was not run: torch from PyPI is a 539 MB wheel that pulls "
        "about 2.4 GB of CUDA libraries (nvidia-cudnn-cu13, nvidia-cublas, triton, ...), some "
        "3 GB for a CPU-only peer; PyPI has no CPU-only build.")
    if ns_rows:
        L.append(
            "- In the bandwidth-limited run, sizes near 1 MiB gain from tbf's 256 KB burst; "
            "the largest size is the one held against the 90% target.")
    L.append(
        f"- Plan (bytes:ops:samples): {plan_str(meta['plan'])}; bandwidth-limited run: "
        f"{plan_str(meta['ns_plan'])}." if meta.get("ns_plan") else
        f"- Plan (bytes:ops:samples): {plan_str(meta['plan'])}.")
    L.append(
        "- Raw results: `.bench/allreduce/results.json`; every rank's log beside it. "
        "Rerun with `make bench-allreduce` (options: `.venv/bin/python -m sagefit.bench_allreduce --help`, passed on by `scripts/bench-allreduce.sh`).")
    return L


def write_block(path, lines):
    body = open(path).read() if os.path.exists(path) else ""
    block = BEGIN + "\n" + "\n".join(lines).rstrip() + "\n" + END
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + block + body[body.index(END) + len(END):]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(body)


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--helper", default=".bench/distributed.test",
                   help="the distributed test binary (go test -c ./distributed)")
    p.add_argument("--plot", help="the allreduceplot binary (distributed/internal/allreduceplot)")
    p.add_argument("--png", default="docs/allreduce.png")
    p.add_argument("--out", default=".bench/allreduce", help="raw results go here")
    p.add_argument("--markdown", help="replace the section between the allreduce markers here")
    p.add_argument("--ranks", default="2,3,4")
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="bytes, comma-separated")
    p.add_argument("--max-n-256mib", type=int, default=4,
                   help="largest n that runs 256 MiB (memory and time)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pump-seconds", type=float, default=1.5)
    p.add_argument("--no-tensorflow", action="store_true")
    p.add_argument("--netns", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--netns-ranks", default="2,3")
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--window", type=int, help="experiments: gRPC stream window in bytes for sagefit")
    p.add_argument("--chunk", type=int, help="experiments: sagefit ChunkBytes")
    p.add_argument("--no-grpc-data", action="store_true",
                   help="skip the series with chunks on the gRPC streams (sagefit_allreduce_transport=grpc)")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: redo the markdown and plot from OUT/results.json")
    p.add_argument("--tf-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tf-workers", help=argparse.SUPPRESS)
    p.add_argument("--tf-plan", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.tf_worker is not None:
        tf_worker(a.tf_worker, a.tf_workers.split(","), [tuple(x) for x in json.loads(a.tf_plan)])
        return

    if a.report_only:
        path = os.path.join(a.out, "results.json")
        with open(path) as f:
            res = json.load(f)
        publish(a, res, path, print)
        return
    if a.window:
        RING_ENV["SAGEFIT_BENCH_WINDOW"] = a.window
    if a.chunk:
        RING_ENV["SAGEFIT_BENCH_CHUNK"] = a.chunk
    t_start = time.monotonic()
    ranks = [int(x) for x in a.ranks.split(",")]
    sizes = [int(x) for x in a.sizes.split(",")]
    global LOG_DIR
    LOG_DIR = os.path.join(a.out, "logs")
    os.makedirs(LOG_DIR, exist_ok=True)
    meta = {"date": str(datetime.date.today()), "machine": machine(), "ranks": ranks,
            "ring_env": dict(RING_ENV),
            "rounds": a.rounds, "load_before": " ".join(open("/proc/loadavg").read().split()[:3]),
            "rate": a.rate, "rate_Bps": rate_bytes(a.rate), **versions()}
    print(f"machine: {meta['machine']}; load {meta['load_before']}", flush=True)
    S = Samples()
    notes = []
    busy = []  # CPU share other work used just before each measurement

    def log(msg):
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", flush=True)

    why = netns_unavailable() if a.netns != "off" else "turned off (--netns off)"
    if why and a.netns == "on":
        raise SystemExit(f"bandwidth-limited run: {why}")
    if why:
        notes.append(f"Bandwidth-limited run skipped: {why}.")
        log(notes[-1])
    ns_ranks = [] if why else [int(x) for x in a.netns_ranks.split(",") if x]
    ns_plan = [(b, o, max(s, 5)) for b, o, s in plan_for(NETNS_SIZES)]
    meta["plan"] = plan_for(sizes)
    meta["ns_plan"] = ns_plan if ns_ranks else None

    for rnd in range(1, a.rounds + 1):
        for n in ranks:
            ips = [f"127.0.0.{r + 1}" for r in range(n)]
            plan = plan_for([s for s in sizes if s < 256 * MiB or n <= a.max_n_256mib])
            busy.append(wait_quiet(log))
            mbps = pump(a.helper, ips, a.pump_seconds)
            S.add_tcp("loopback", n, mbps)
            log(f"round {rnd} n={n}: raw TCP {mbps:,.0f} MB/s per link")
            for b, _, _ in plan:
                if b >= 4 * MiB:
                    busy.append(wait_quiet(log))
                    mbps = pump(a.helper, ips, a.pump_seconds, span=b)
                    S.add_tcp("loopback", n, mbps, span=b)
                    log(f"round {rnd} n={n}: raw TCP moving {size_name(b)} buffers {mbps:,.0f} MB/s per link")
            busy.append(wait_quiet(log))
            S.add("loopback", sagefit_ring(a.helper, ips, plan))
            log(f"round {rnd} n={n}: sagefit done")
            busy.append(wait_quiet(log))
            S.add("loopback", bare_ring(a.helper, ips, plan))
            log(f"round {rnd} n={n}: bare ring done")
            if not a.no_grpc_data:
                busy.append(wait_quiet(log))
                S.add("loopback", sagefit_ring(a.helper, ips, plan, data="grpc"))
                log(f"round {rnd} n={n}: sagefit (chunks on gRPC streams) done")
            if not a.no_tensorflow:
                busy.append(wait_quiet(log))
                recs = tensorflow_ring(ips, plan)
                for r in recs:
                    if "tf_version" in r:
                        meta["tf_version"] = r["tf_version"]
                S.add("loopback", recs)
                log(f"round {rnd} n={n}: tensorflow done")
        for n in ns_ranks:
            busy.append(wait_quiet(log))
            with Netns(n, a.rate) as net:
                mbps = pump(a.helper, net.ips, a.pump_seconds + 1, net.hosts)
                S.add_tcp("netns", n, mbps)
                log(f"round {rnd} netns n={n}: raw TCP {mbps:,.0f} MB/s per link")
                S.add("netns", sagefit_ring(a.helper, net.ips, ns_plan, net.hosts))
                log(f"round {rnd} netns n={n}: sagefit done")
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"meta": meta, "results": S.table()}, f, indent=1)

    meta["minutes"] = (time.monotonic() - t_start) / 60
    meta["notes"] = notes
    meta["busy_before"] = busy
    res = {"meta": meta, "results": S.table()}
    path = os.path.join(a.out, "results.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    publish(a, res, path, log)


def publish(a, res, path, log):
    """Print the report; write the plot and the markdown section if asked."""
    lines = report(res, res["meta"]) + res["meta"].get("notes", [])
    print("\n".join(lines))
    if a.plot:
        os.makedirs(os.path.dirname(a.png) or ".", exist_ok=True)
        subprocess.run([a.plot, "-in", path, "-out", a.png], check=True, timeout=120)
        log(f"plot: {a.png}")
    if a.markdown:
        write_block(a.markdown, lines)
        log(f"wrote {a.markdown}")


if __name__ == "__main__":
    main()
