"""Helpers for the compose fault drills (scripts/compose/drills.py): the
cluster's containers, its HTTP endpoints (aggregators, NATS monitoring), the
load generators' accounts, and `meridian watch` run from the host.

Every wait is bounded twice: by its own timeout and by DRILL_DEADLINE, the
Unix time by which the whole session must be done. Standard library only.
"""

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request

PROJECT = os.environ["COMPOSE_PROJECT_NAME"]
COMPOSE = shlex.split(os.environ.get("COMPOSE_CMD", "docker compose"))
MERIDIAN = os.environ.get("MERIDIAN_BIN", "bin/meridian")
EDGE_PORTS = (int(os.environ.get("MERIDIAN_EDGE1_PORT", "5901")),
              int(os.environ.get("MERIDIAN_EDGE2_PORT", "5902")))
# The edges serve wss and require a token: `meridian watch` (every watch
# here) reads them from MERIDIAN_TOKEN and MERIDIAN_CA_FILE, which
# scripts/compose-test sets from the cluster's own secrets.
EDGE_SCHEME = os.environ.get("MERIDIAN_EDGE_SCHEME", "wss")
EDGE_URLS = tuple(f"{EDGE_SCHEME}://127.0.0.1:{p}/ws/metrics" for p in EDGE_PORTS)
DEADLINE = float(os.environ.get("DRILL_DEADLINE", time.time() + 240))

# How long the cluster's totals may take to reach the load generators'
# accounts once the load stops: two report intervals and a tick, with room.
CONVERGE_MAX = 10.0

LOADGEN_RE = re.compile(
    r"sent (\d+) requests in (\S+): (\d+) got 2xx/3xx, (\d+) got 4xx/5xx, (\d+) transport errors")


class DrillFailure(Exception):
    """A drill's invariant broke, or what it waited for did not happen."""


class Broken(DrillFailure):
    """An invariant broke while waiting: fail at once, do not keep polling."""


def log(msg=""):
    print(msg, flush=True)


def remaining(cap):
    """The smaller of cap and the time left before the session deadline."""
    left = DEADLINE - time.time()
    if left <= 0:
        raise DrillFailure("time budget exhausted")
    return min(cap, left)


def run(args, timeout=30, check=True):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=remaining(timeout))
    except subprocess.TimeoutExpired:
        raise DrillFailure(f"timed out after {timeout}s: {' '.join(args)}")
    if check and p.returncode != 0:
        raise DrillFailure(f"{' '.join(args)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def compose(*args, timeout=60):
    return run(COMPOSE + list(args), timeout=timeout)


def wait_until(what, fn, timeout, interval=0.2):
    """Polls fn until it returns a truthy value; returns (value, seconds)."""
    start = time.monotonic()
    end = start + remaining(timeout)
    last_err = None
    while True:
        try:
            v = fn()
            if v:
                return v, time.monotonic() - start
        except Broken:
            raise
        except (OSError, ValueError, KeyError, DrillFailure) as e:
            last_err = e  # e.g. a container between restarts: poll again
        if time.monotonic() >= end:
            extra = f" (last error: {last_err})" if last_err else ""
            raise DrillFailure(f"{what}: not within {timeout:.0f}s{extra}")
        time.sleep(interval)


def http_get(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def parse_prom(text):
    """Prometheus text format → {(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def fmt_time(t):
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S")


# --- containers ----------------------------------------------------------

def containers(service):
    """Container ids of a compose service, running or not (works for v1 and v2)."""
    out = run(["docker", "ps", "-a", "-q", "--no-trunc",
               "--filter", f"label=com.docker.compose.project={PROJECT}",
               "--filter", f"label=com.docker.compose.service={service}"])
    ids = sorted(out.split())
    if not ids:
        raise DrillFailure(f"no container for service {service}")
    return ids


def container(service):
    return containers(service)[0]


def host_port(cid, port):
    """The 127.0.0.1:N address a container port is published on; it changes
    when the container restarts, so it is looked up each time."""
    out = run(["docker", "port", cid, f"{port}/tcp"]).split()
    if not out:
        raise DrillFailure(f"{cid[:12]} publishes no port {port}")
    return out[0].replace("0.0.0.0", "127.0.0.1")


def health(cid):
    return run(["docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", cid]).strip()


def wait_healthy(cid, name, timeout=30):
    _, took = wait_until(f"{name} healthy", lambda: health(cid) == "healthy", timeout, 0.25)
    return took


def name_of(cid):
    return run(["docker", "inspect", "-f", "{{.Name}}", cid]).strip().lstrip("/")


# --- Meridian endpoints ---------------------------------------------------

def aggregator_metrics(service, path="/metrics"):
    cid = container(service)
    status, body = http_get(f"http://{host_port(cid, 9102)}{path}")
    if status != 200:
        raise DrillFailure(f"{service}{path}: HTTP {status}")
    return parse_prom(body)


def running(cid):
    return run(["docker", "inspect", "-f", "{{.State.Running}}", cid]).strip() == "true"


def live_aggregators():
    return [s for s in ("aggregator-1", "aggregator-2") if running(container(s))]


def leaders():
    """{service: leader gauge} for the running aggregators."""
    out = {}
    for s in live_aggregators():
        m = aggregator_metrics(s)
        out[s] = m.get(("meridian_aggregator_leader", frozenset()), 0.0)
    return out


def gateways():
    """{instance: {region, up, requests}} as the cluster's aggregators export
    them on /metrics/gateways. Only the leader exports (a follower answers an
    empty page), so the leader's page is read; without a single leader, the
    first non-empty page."""
    ls = leaders()
    order = sorted(ls, key=lambda s: -ls[s])
    for service in order:
        m = aggregator_metrics(service, "/metrics/gateways")
        out = {}
        for (name, labels), v in m.items():
            lab = dict(labels)
            if "instance" not in lab:
                continue
            g = out.setdefault(lab["instance"], {"region": lab.get("region")})
            if name == "meridian_gateway_up":
                g["up"] = v
            elif name == "meridian_gateway_requests_total":
                g["requests"] = v
            elif name == "meridian_gateway_start_time_seconds":
                g["start"] = v
        if out:
            return out
    raise DrillFailure(f"no aggregator exports gateways on /metrics/gateways (leader gauges {ls})")


def gateway_containers():
    """{instance id (= container hostname): container id} for every gateway."""
    out = {}
    for svc in ("gw-eu", "gw-us"):
        for cid in containers(svc):
            host = run(["docker", "inspect", "-f", "{{.Config.Hostname}}", cid]).strip()
            out[host] = cid
    return out


def busiest_gateway():
    """The live gateway serving the most requests right now (not in total:
    after restarts the load may have moved), by two readings two reports
    apart. Returns (instance, container id, its /metrics/gateways entry)."""
    first = gateways()
    time.sleep(min(2.2, remaining(2.2)))
    second = gateways()
    rates = {i: g.get("requests", 0) - first.get(i, {}).get("requests", 0)
             for i, g in second.items()
             if g.get("up") == 1 and g.get("start") == first.get(i, {}).get("start")}
    if not rates or max(rates.values()) <= 0:
        raise DrillFailure(f"no live gateway is serving requests: {second}")
    inst = max(rates, key=rates.get)
    cid = gateway_containers().get(inst)
    if cid is None:
        raise DrillFailure(f"gateway instance {inst} matches no container hostname")
    return inst, cid, second[inst]


def nats_json(cid, path):
    status, body = http_get(f"http://{host_port(cid, 8222)}{path}")
    if status != 200:
        raise DrillFailure(f"NATS {path}: HTTP {status}")
    return json.loads(body)


def stream_info(cid, name="MERIDIAN_SNAPSHOTS"):
    js = nats_json(cid, "/jsz?streams=true")
    for acct in js.get("account_details") or []:
        for s in acct.get("stream_detail") or []:
            if s.get("name") == name:
                return s
    raise DrillFailure(f"stream {name} not on this node")


def jetstream_assets(nodes):
    """{stream: set of nodes holding a replica}, from every running node's
    /jsz (a node lists the streams it holds)."""
    out = {}
    for name, cid in nodes.items():
        if not running(cid):
            continue
        js = nats_json(cid, "/jsz?streams=true")
        for acct in js.get("account_details") or []:
            for st in acct.get("stream_detail") or []:
                cl = st.get("cluster") or {}
                hosts = out.setdefault(st["name"], set())
                hosts.add(name)
                if cl.get("leader"):
                    hosts.add(cl["leader"])
                hosts.update(r["name"] for r in cl.get("replicas") or [])
    return out


# --- load generators ------------------------------------------------------

LOADGENS = ("loadgen-eu", "loadgen-us")


def loadgen_accounts():
    """Sums every run's final line in the load generators' logs: a stopped
    and restarted generator has printed one line per run."""
    out = compose("logs", "--no-color", *LOADGENS)
    tot = {"sent": 0, "ok": 0, "failed": 0, "transport": 0, "runs": 0}
    for m in LOADGEN_RE.finditer(out):
        tot["sent"] += int(m.group(1))
        tot["ok"] += int(m.group(3))
        tot["failed"] += int(m.group(4))
        tot["transport"] += int(m.group(5))
        tot["runs"] += 1
    return tot


def stop_load():
    t = time.monotonic()
    compose("stop", "-t", "20", *LOADGENS, timeout=40)
    return time.monotonic() - t


def start_load(monitor):
    before = monitor.latest()["requests_total"]
    compose("start", *LOADGENS, timeout=40)
    wait_until("load generators sending again",
               lambda: monitor.latest()["requests_total"] > before, 10)


def account(monitor, label, expect_runs):
    """Stops the load, then waits until the cluster's totals equal what the
    load generators were answered, over every run so far. A request that got
    no response (refused while a gateway restarted) may or may not have been
    counted; the check is then served <= counted <= sent."""
    took_stop = stop_load()
    acc = loadgen_accounts()
    if acc["runs"] != expect_runs:
        raise DrillFailure(f"{label}: found {acc['runs']} load generator reports in the logs, expected {expect_runs}")
    served = acc["ok"] + acc["failed"]
    log(f"  load generators stopped in {took_stop:.1f}s; {acc['runs']} runs sent {acc['sent']}: "
        f"{acc['ok']} 2xx/3xx, {acc['failed']} 4xx/5xx, {acc['transport']} transport errors")

    def settled():
        s = monitor.latest()
        if s["requests_total"] > acc["sent"]:
            raise Broken(f"{label}: cluster counts {s['requests_total']} requests, more than the "
                               f"{acc['sent']} the load generators sent")
        if acc["transport"] == 0:
            return s if s["requests_total"] == served else None
        # Wait for two equal ticks: nothing more is coming.
        hist = monitor.snapshots()
        if len(hist) >= 3 and s["requests_total"] >= served and \
                hist[-3]["requests_total"] == s["requests_total"] and \
                hist[-1]["timestamp"] - hist[-3]["timestamp"] >= 2:
            return s
        return None

    try:
        s, took = wait_until(f"{label}: cluster totals reach the load generators' {served} answered requests",
                             settled, CONVERGE_MAX, 0.1)
    except DrillFailure as e:
        last = monitor.latest()
        raise DrillFailure(f"{e}; last snapshot {fmt_time(last['timestamp'])}: total={last['requests_total']} "
                           f"success={last['requests_success']} error={last['requests_error']}")
    if acc["transport"] == 0:
        exact = s["requests_success"] == acc["ok"] and s["requests_error"] == acc["failed"]
        if not exact:
            raise DrillFailure(f"{label}: totals match ({served}) but success/error "
                               f"{s['requests_success']}/{s['requests_error']} != "
                               f"{acc['ok']}/{acc['failed']}")
        log(f"  EXACT after {took:.1f}s: total={s['requests_total']} success={s['requests_success']} "
            f"error={s['requests_error']} == load generators' {served} = {acc['ok']} + {acc['failed']}")
    else:
        counted = s["requests_total"]
        log(f"  BOUNDED after {took:.1f}s: served {served} <= counted {counted} <= sent {acc['sent']} "
            f"({acc['transport']} requests got no response; {counted - served} of them reached a gateway)")
    return acc


# --- the monitor -----------------------------------------------------------

class Watch:
    """A host `meridian watch --raw` process, its snapshots and its stderr
    lines, each with the wall time it was read."""

    def __init__(self, urls, label):
        self.label = label
        self.lock = threading.Lock()
        self.snaps = []   # (received wall time, snapshot dict with float timestamp)
        self.errs = []    # (received wall time, line)
        self.proc = subprocess.Popen(
            [MERIDIAN, "watch", "--raw", "--reconnect-timeout", "20s", *urls],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.threads = [threading.Thread(target=self._read_out, daemon=True),
                        threading.Thread(target=self._read_err, daemon=True)]
        for t in self.threads:
            t.start()

    def _read_out(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("type") != "Snapshot":
                continue
            ev["timestamp"] = parse_time(ev["timestamp"])
            with self.lock:
                self.snaps.append((time.time(), ev))

    def _read_err(self):
        for line in self.proc.stderr:
            with self.lock:
                self.errs.append((time.time(), line.strip()))

    def snapshots(self, since=None):
        with self.lock:
            return [s for (t, s) in self.snaps if since is None or t >= since]

    def received(self, since=None):
        with self.lock:
            return [(t, s) for (t, s) in self.snaps if since is None or t >= since]

    def stderr(self, since=None):
        with self.lock:
            return [(t, l) for (t, l) in self.errs if since is None or t >= since]

    def latest(self):
        with self.lock:
            if not self.snaps:
                raise DrillFailure(f"{self.label}: no snapshot yet")
            return self.snaps[-1][1]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self.threads:
            t.join(5)


def check_timeline(snaps, label, allow_split=False):
    """Totals never decrease along snapshot time; snapshots of the same second
    agree. Returns (distinct ticks, largest gap between ticks in seconds,
    number of same-second disagreements)."""
    by_time = {}
    split = 0
    for s in snaps:
        key = s["timestamp"]
        vals = (s["requests_total"], s["requests_success"], s["requests_error"])
        if key in by_time and by_time[key] != vals:
            split += 1
            if not allow_split:
                raise DrillFailure(f"{label}: two different snapshots for {fmt_time(key)}: {by_time[key]} vs {vals}")
            by_time[key] = max(by_time[key], vals)
        by_time.setdefault(key, vals)
    ticks = sorted(by_time)
    gap = 0.0
    for a, b in zip(ticks, ticks[1:]):
        gap = max(gap, b - a)
        for i, f in enumerate(("requests_total", "requests_success", "requests_error")):
            if by_time[b][i] < by_time[a][i]:
                raise DrillFailure(f"{label}: {f} decreased from {by_time[a][i]} at {fmt_time(a)} "
                                   f"to {by_time[b][i]} at {fmt_time(b)}")
    return len(ticks), gap, split


def leadership_note():
    """(whether exactly one aggregator leads, {service: leader gauge})."""
    ls = leaders()
    n = sum(1 for v in ls.values() if v == 1)
    return n == 1, ls
