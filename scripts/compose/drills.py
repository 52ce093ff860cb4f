#!/usr/bin/env python3
"""Fault drills against a running Meridian docker-compose cluster.

Run by scripts/compose-test, which builds the image, brings the cluster up
under a unique project name, and always tears it down; this file only drives
and measures, with the helpers in cluster.py. Standard library only.

Every drill prints what it measured and raises DrillFailure when an invariant
breaks. Snapshots are read the way a user reads them: the host's
`meridian watch --raw` against the published edges. A monitor watch runs for
the whole session (failing over between the two edges), so that "totals never
decrease" is checked across every drill, not just inside each.

Environment (set by compose-test): COMPOSE_PROJECT_NAME, COMPOSE_CMD
(e.g. "docker compose"), MERIDIAN_BIN (host binary), MERIDIAN_EDGE1_PORT,
MERIDIAN_EDGE2_PORT, DRILL_DEADLINE (Unix time by which everything must be
done), MERIDIAN_DRILLS (optional comma-separated subset, e.g. "1,3").
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from cluster import (  # noqa: E402 (after the line above on purpose)
    EDGE_URLS, MERIDIAN, DrillFailure, Watch, account, busiest_gateway, check_timeline, compose,
    container, containers, fmt_time, gateways, host_port, http_get, jetstream_assets, leaders,
    leadership_note, log, name_of, nats_json, parse_time, remaining, run, start_load, stream_info,
    wait_healthy, wait_until,
)

# What a drill promises, in seconds.
TAKEOVER_MAX = 3.0         # drill 3: snapshots continue within 3 s of the kill
STALE_MAX = 8.0            # drill 6: a cut-off gateway is reported stale
NATS_OUTAGE_GAP_MAX = 5.0  # drill 2: longest pause in snapshots while a node stops


# --- drills ---------------------------------------------------------------

def drill1_edges_agree_and_exact(mon, state):
    log("== drill 1: both edges serve the same cluster snapshot; totals equal what the load generators sent")
    results = {}

    def take(url):
        out = run([MERIDIAN, "watch", "--raw", "--count", "5", url], timeout=20)
        results[url] = [dict(e, timestamp=parse_time(e["timestamp"])) for e in
                        (json.loads(l) for l in out.splitlines() if l.startswith("{"))
                        if e.get("type") == "Snapshot"]

    threads = [threading.Thread(target=lambda u=u: take(u)) for u in EDGE_URLS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = (results.get(u) for u in EDGE_URLS)
    if not a or not b:
        raise DrillFailure("drill 1: an edge sent no snapshot")
    single, ls = leadership_note()
    ticks, gap, split = check_timeline(a + b, "drill 1 (edge-1 + edge-2 merged)", allow_split=not single)
    ta = {s["timestamp"]: s["requests_total"] for s in a}
    tb = {s["timestamp"]: s["requests_total"] for s in b}
    common = sorted(set(ta) & set(tb))
    same = sum(1 for t in common if ta[t] == tb[t])
    newest_skew = abs(max(ta) - max(tb))
    if newest_skew > 1:
        raise DrillFailure(f"drill 1: edges' newest snapshots are {newest_skew:.0f}s apart")
    log(f"  edge-1 {len(a)} snapshots, edge-2 {len(b)}; {len(common)} seconds seen by both, identical totals in "
        f"{same}; merged timeline of {ticks} ticks never decreases; newest snapshots {newest_skew:.0f}s apart")
    if split:
        log(f"  NOTE: {split} second(s) had two different cluster snapshots: no single leader "
            f"(leader gauges {ls}), so more than one aggregator publishes")
    state["runs"] += 2
    # The edges' door: a client without a token, or over plain ws, gets nothing.
    for what, url, env in (("no token", EDGE_URLS[0], {"MERIDIAN_TOKEN": ""}),
                           ("plain ws", EDGE_URLS[0].replace("wss://", "ws://", 1), {})):
        p = subprocess.run([MERIDIAN, "watch", "--count", "1", "--reconnect-timeout", "2s", url],
                           capture_output=True, text=True, timeout=remaining(15), env={**os.environ, **env})
        if p.returncode == 0:
            raise DrillFailure(f"drill 1: an edge served a client with {what}")
    log("  a client without a token, or over plain ws, is refused by the edges")
    account(mon, "drill 1", state["runs"])
    start_load(mon)
    state["load"] = True


def drill2_nats_node(mon, state):
    log("== drill 2: stop one NATS node; snapshots and history continue; it rejoins")
    nodes = {f"nats-{i}": container(f"nats-{i}") for i in (1, 2, 3)}
    assets = jetstream_assets(nodes)
    log("  JetStream assets: " + ", ".join(f"{a} R{len(h)} on {','.join(sorted(h))}" for a, h in sorted(assets.items())))
    info = stream_info(nodes["nats-1"])
    leader = (info.get("cluster") or {}).get("leader") or "nats-1"
    # The worst case: the node holding a single-replica asset if there is
    # one (losing it is what a replication factor of 1 means), else the
    # history stream's leader.
    single = sorted((a, next(iter(h))) for a, h in assets.items() if len(h) == 1)
    if single:
        victim = single[0][1]
        log(f"  WARNING: single-replica assets {[a for a, _ in single]} — a node failure loses them; "
            f"stopping {victim}, which holds {[a for a, n in single if n == victim]}")
    else:
        victim = leader if leader in nodes else "nats-1"
    others = [n for n in nodes if n != victim]
    seq0 = stream_info(nodes[others[0]])["state"]["last_seq"]
    log(f"  history stream leader is {leader}; stopping {victim} (last_seq {seq0})")
    t0 = time.time()
    compose("stop", "-t", "15", victim, timeout=30)
    stopped = time.time()
    log(f"  {victim} stopped in {stopped - t0:.1f}s (lame duck)")
    seq1 = stream_info(nodes[others[0]])["state"]["last_seq"]

    def history_moves():
        si = stream_info(nodes[others[0]])
        return si if si["state"]["last_seq"] >= seq1 + 7 * 3 else None  # three more ticks of 7 scopes
    try:
        si, took_hist = wait_until("history stream takes new snapshots with a node down", history_moves, 15, 0.25)
    except DrillFailure as e:
        hint = ""
        if any(a.startswith("KV_") for a, _ in single):
            hint = (f"; the aggregators' lease/state buckets were single-replica on {victim}, so no aggregator "
                    f"could hold the leader lease (leader gauges {leaders()}): they need 3 replicas")
        raise DrillFailure(f"{e}{hint}")
    new_leader = (si.get("cluster") or {}).get("leader")
    _, took_snap = wait_until("5 new snapshots with a node down",
                              lambda: len({s["timestamp"] for s in mon.snapshots(stopped)}) >= 5, 15)
    ticks, gap, _ = check_timeline(mon.snapshots(t0 - 1), "drill 2", allow_split=not leadership_note()[0])
    if gap > NATS_OUTAGE_GAP_MAX:
        raise DrillFailure(f"drill 2: snapshots paused {gap:.0f}s while {victim} stopped (max {NATS_OUTAGE_GAP_MAX:.0f}s)")
    log(f"  with {victim} down: history grew to last_seq {si['state']['last_seq']} within {took_hist:.1f}s "
        f"(stream leader now {new_leader}); 5 new snapshots within {took_snap:.1f}s; "
        f"largest gap between ticks {gap:.0f}s; totals never decreased")

    t1 = time.time()
    compose("start", victim, timeout=30)
    cid = nodes[victim]

    def rejoined():
        status, _ = http_get(f"http://{host_port(cid, 8222)}/healthz")
        if status != 200:
            return None
        peers = {r.get("remote_name") for r in nats_json(cid, "/routez").get("routes") or []}
        return peers if set(others) <= peers else None
    peers, took_join = wait_until(f"{victim} rejoins (healthz 200, routes to {others})", rejoined, 30, 0.25)

    def replica_current():
        # Only the stream's leader tracks its followers' progress.
        lead = (stream_info(nodes[others[0]]).get("cluster") or {}).get("leader")
        if lead not in nodes:
            return False
        if lead == victim:
            return True
        si = stream_info(nodes[lead])
        reps = {r["name"]: r.get("current") for r in (si.get("cluster") or {}).get("replicas") or []}
        return reps.get(victim) is True
    wait_until(f"{victim}'s history replica is current again", replica_current, 20, 0.25)
    log(f"  {victim} started: /healthz 200 and routes to {sorted(peers)} after {took_join:.1f}s; "
        f"its history replica current after {time.time() - t1:.1f}s")


def drill3_kill_leader(mon, state):
    log("== drill 3: kill the leading aggregator; snapshots continue within 3 s; totals never decrease")
    single, ls = leadership_note()
    if single:
        victim = next(s for s, v in ls.items() if v == 1)
        survivor = next(s for s in ls if s != victim)
    else:
        victim, survivor = "aggregator-1", "aggregator-2"
        log(f"  LEADERSHIP NOT IMPLEMENTED: not exactly one leader (meridian_aggregator_leader {ls}); "
            f"killing {victim} only checks that snapshots continue — no takeover is exercised")
    cid = container(victim)
    t0 = time.time()
    run(["docker", "kill", cid])
    log(f"  docker kill {victim} at {fmt_time(t0)}")
    took_lead = None

    def resumed():
        nonlocal took_lead
        if single and took_lead is None and leaders().get(survivor) == 1:
            took_lead = time.time() - t0
        for (rt, s) in mon.received(t0):
            if s["timestamp"] > t0 and (not single or took_lead is not None):
                return rt, s
        return None
    (rt, s), _ = wait_until("a snapshot of a tick after the kill" + (f" and {survivor} leading" if single else ""),
                            resumed, TAKEOVER_MAX + 7, 0.05)
    tick_delay = s["timestamp"] - t0
    seen_delay = rt - t0
    wait_until("3 more ticks", lambda: len({x["timestamp"] for x in mon.snapshots(t0)}) >= 4, 10)
    ticks, gap, _ = check_timeline(mon.snapshots(t0 - 3), "drill 3", allow_split=not single)
    msg = (f"  first tick after the kill: {fmt_time(s['timestamp'])} ({tick_delay:.1f}s after it), "
           f"received {seen_delay:.1f}s after it; largest gap between ticks {gap:.0f}s; totals never decreased")
    if took_lead is not None:
        msg += f"; {survivor} leader {took_lead:.1f}s after the kill"
    log(msg)
    # The measures are the first tick after the kill and the time until the
    # survivor led. The gap between ticks also counts the part of a second
    # before the kill (the last tick can be up to 1 s older), and the receive
    # delay adds the edge's per-connection phase (up to one interval): both
    # are shown, the gap bounded by one second more.
    if tick_delay > TAKEOVER_MAX or (took_lead or 0) > TAKEOVER_MAX or gap > TAKEOVER_MAX + 1:
        raise DrillFailure(f"drill 3: snapshots resumed {tick_delay:.1f}s after the kill, gap between ticks "
                           f"{gap:.0f}s, new leader after {took_lead}s; max {TAKEOVER_MAX:.0f}s")
    t1 = time.time()
    run(["docker", "start", cid])
    wait_healthy(cid, victim)
    log(f"  {victim} restarted and healthy in {time.time() - t1:.1f}s; leader gauges now {leaders()}")


def drill4_edge_failover(mon, state):
    log("== drill 4: stop one edge; watch fails over to the other and continues")
    w = Watch(EDGE_URLS, "drill 4 watch")
    try:
        wait_until("watch connected to edge-1", lambda: len(w.snapshots()) >= 2, 10)
        cid = container("edge-1")
        t0 = time.time()
        compose("stop", "-t", "10", "edge-1", timeout=30)
        stopped = time.time()

        def reconnected():
            for (t, line) in w.stderr(t0):
                if line.startswith("reconnected to") and EDGE_URLS[1] in line:
                    return t
            return None
        rt, _ = wait_until("watch reconnects to edge-2", reconnected, 15, 0.05)
        wait_until("3 new snapshots from edge-2",
                   lambda: len({s["timestamp"] for s in w.snapshots(rt)}) >= 3, 10)
        if not w.alive():
            raise DrillFailure("drill 4: watch exited")
        ticks, gap, _ = check_timeline(w.snapshots(), "drill 4 watch", allow_split=not leadership_note()[0])
        lost = [l for (t, l) in w.stderr(t0) if "lost" in l]
        log(f"  edge-1 stopped in {stopped - t0:.1f}s; watch: \"{lost[0] if lost else '?'}\"; reconnected to "
            f"edge-2 {rt - t0:.1f}s after the stop began; {ticks} ticks, largest gap {gap:.0f}s, totals never decreased")
    finally:
        w.stop()
    t1 = time.time()
    compose("start", "edge-1", timeout=30)
    wait_healthy(cid, "edge-1")
    log(f"  edge-1 started and healthy in {time.time() - t1:.1f}s")
    # The restarted edge backfilled its history from JetStream: the history
    # written while drills 2 and 3 broke things must have no hole. (The first
    # Snapshot comes on connect, the TimeSeries after the subscription.)
    out = run([MERIDIAN, "watch", "--raw", "--history", "--count", "2", "--metrics", "requests_total",
               EDGE_URLS[0]], timeout=15)
    pts = []
    for l in out.splitlines():
        if l.startswith("{"):
            e = json.loads(l)
            if e.get("type") == "TimeSeries":
                pts = [parse_time(p["timestamp"]) for p in e.get("data_points") or []]
    if not pts:
        raise DrillFailure("drill 4: the restarted edge sent no history")
    hgap = max((b - a for a, b in zip(pts, pts[1:])), default=0)
    step = min((b - a for a, b in zip(pts, pts[1:])), default=0)
    log(f"  history from the restarted edge (backfilled from JetStream): {len(pts)} points "
        f"{fmt_time(pts[0])}..{fmt_time(pts[-1])}, step {step:.0f}s, largest gap {hgap:.0f}s")
    if hgap > max(2 * step, 5):
        raise DrillFailure(f"drill 4: history has a {hgap:.0f}s hole")


def drill5_gateway_restart(mon, state):
    log("== drill 5: restart a gateway (graceful); totals never decrease and equal what was served")
    inst, cid, g = busiest_gateway()
    log(f"  restarting {name_of(cid)} (instance {inst}, region {g['region']}, {g.get('requests', 0):.0f} requests)")
    t0 = time.time()
    run(["docker", "restart", "-t", "15", cid], timeout=30)
    log(f"  docker restart returned after {time.time() - t0:.1f}s")

    def new_boot():
        now = gateways().get(inst, {})
        return now.get("up") == 1 and now.get("start", 0) > g.get("start", 0)
    wait_until("the aggregator sees the gateway's new boot (start_time_seconds moves)", new_boot, 15)
    up_again = time.time()
    wait_until("3 ticks after the restart", lambda: len({s["timestamp"] for s in mon.snapshots(up_again)}) >= 3, 10)
    ticks, gap, _ = check_timeline(mon.snapshots(t0 - 2), "drill 5", allow_split=not leadership_note()[0])
    log(f"  new boot reported and up again {up_again - t0:.1f}s after the restart began; "
        f"{ticks} ticks, totals never decreased")
    state["runs"] += 2
    account(mon, "drill 5", state["runs"])
    start_load(mon)
    state["load"] = True


def drill6_partition(mon, state):
    log("== drill 6: cut one gateway off the broker network; it is reported stale; reconnect: totals exact again")
    inst, cid, g = busiest_gateway()
    nets = json.loads(run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", cid]))
    backbone = next((n for n in nets if n.endswith("_backbone")), None)
    if backbone is None:
        raise DrillFailure(f"drill 6: {name_of(cid)} is on no *_backbone network: {list(nets)}")
    aliases = [a for a in (nets[backbone].get("Aliases") or []) if a not in (cid[:12],)]
    before = g.get("requests", 0)
    t0 = time.time()
    run(["docker", "network", "disconnect", backbone, cid])
    log(f"  disconnected {name_of(cid)} (instance {inst}, {before:.0f} requests) from {backbone}")

    _, took_stale = wait_until("the aggregator reports the gateway stale (up 0)",
                               lambda: gateways().get(inst, {}).get("up") == 0, STALE_MAX, 0.1)
    log(f"  meridian_gateway_up{{instance=\"{inst}\"}} 0 on /metrics/gateways after {took_stale:.1f}s")
    # It keeps serving its region while cut off; hold the cut a few seconds.
    time.sleep(remaining(4))
    cut = time.time() - t0
    t1 = time.time()
    args = ["docker", "network", "connect"]
    for a in aliases:
        args += ["--alias", a]
    run(args + [backbone, cid])

    def back():
        g = gateways().get(inst, {})
        return g if g.get("up") == 1 else None
    now, took_back = wait_until("the gateway reports again (up 1)", back, 30, 0.1)
    served_cut = now.get("requests", 0) - before
    log(f"  reconnected after a {cut:.1f}s cut; up 1 again after {took_back:.1f}s; it served "
        f"{served_cut:.0f} requests meanwhile, now counted")
    if served_cut <= 0:
        raise DrillFailure("drill 6: the gateway's counter did not grow across the cut (did it get traffic?)")
    ticks, gap, _ = check_timeline(mon.snapshots(t0 - 2), "drill 6", allow_split=not leadership_note()[0])
    log(f"  {ticks} ticks since the cut, largest gap {gap:.0f}s, totals never decreased")
    state["runs"] += 2
    account(mon, "drill 6", state["runs"])
    state["load"] = False  # the last accounting: the load stays stopped


def drill7_scale(mon, state):
    log("== drill 7: scale gw-eu out to 3 and back to 2; each replica reports under its own instance id")
    before = set(containers("gw-eu"))
    t0 = time.time()
    compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "gw-eu=3", "gw-eu", timeout=60)
    added = [c for c in containers("gw-eu") if c not in before]
    if len(added) != 1:
        raise DrillFailure(f"drill 7: scaling to 3 added {len(added)} containers")
    cid = added[0]
    inst = run(["docker", "inspect", "-f", "{{.Config.Hostname}}", cid]).strip()
    wait_healthy(cid, name_of(cid))

    def reported():
        g = gateways()
        return g if g.get(inst, {}).get("up") == 1 else None
    g, _ = wait_until(f"instance {inst} reports", reported, 15)
    ids = sorted(i for i, x in g.items() if x.get("region") == "eu" and x.get("up") == 1)
    if len(ids) != 3:
        raise DrillFailure(f"drill 7: expected 3 live eu instances, have {ids}")
    log(f"  {name_of(cid)} (instance {inst} = its hostname) up and reporting {time.time() - t0:.1f}s after "
        f"`up --scale gw-eu=3`; live eu instances {ids}")
    t1 = time.time()
    compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "gw-eu=2", "gw-eu", timeout=60)
    wait_until(f"instance {inst} reported down after scale-in",
               lambda: gateways().get(inst, {}).get("up") == 0, 10)
    if len(containers("gw-eu")) != 2:
        raise DrillFailure("drill 7: scale-in left more than 2 gw-eu containers")
    log(f"  scaled back to 2 in {time.time() - t1:.1f}s; instance {inst} up 0 (shut down, its counts kept)")


DRILLS = {
    "1": drill1_edges_agree_and_exact,
    "2": drill2_nats_node,
    "3": drill3_kill_leader,
    "4": drill4_edge_failover,
    "5": drill5_gateway_restart,
    "6": drill6_partition,
    "7": drill7_scale,
}


def main():
    # compose-test stops a run that overstays with SIGTERM: unwind through
    # the finally blocks so that no watch process is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = [d.strip() for d in os.environ.get("MERIDIAN_DRILLS", "1,2,3,4,5,6,7").split(",") if d.strip()]
    for d in chosen:
        if d not in DRILLS:
            print(f"unknown drill {d!r}; have {','.join(DRILLS)}", file=sys.stderr)
            return 2
    mon = Watch(EDGE_URLS, "monitor")
    state = {"runs": 0, "load": True}  # load generators' runs ended so far; load running
    timings = []
    try:
        wait_until("monitor watch gets snapshots", lambda: len(mon.snapshots()) >= 2, 20)
        for d in chosen:
            t = time.monotonic()
            try:
                DRILLS[d](mon, state)
            except DrillFailure as e:
                log(f"FAIL drill {d}: {e}")
                return 1
            timings.append((d, time.monotonic() - t))
            log(f"  PASS drill {d} ({timings[-1][1]:.1f}s)")
        if state["load"]:
            state["runs"] += 2
            account(mon, "final", state["runs"])
        ticks, gap, split = check_timeline(mon.snapshots(), "whole session", allow_split=not leadership_note()[0])
        log(f"== session: the monitor watch saw {ticks} ticks across every drill, largest gap {gap:.0f}s, "
            f"totals never decreased" + (f"; {split} seconds with two different snapshots (two publishers)" if split else ""))
        log("== drill timings: " + ", ".join(f"{d}: {s:.1f}s" for d, s in timings))
        return 0
    except DrillFailure as e:
        log(f"FAIL: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        mon.stop()


if __name__ == "__main__":
    sys.exit(main())
