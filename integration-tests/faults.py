#!/usr/bin/env python3
"""Driver and checker of the fault matrix (integration-tests/faults.sh), stdlib only.

  plan    --seed S --run N --fault F   the run's fault schedule: lines "WAIT HOLD" (seconds)
  run     --url U[,U2] --db URL --dir D  drives load until D/stop exists, drains, checks, appends
                                        one JSON line to --results and prints the run's line
  ok      --results F                   exit 0 when the last run passed every check
  skip    --run N --fault F --why TEXT  records a run that could not be made on this machine
  summary --results F [--doc PATH ...]  the table; writes --doc when --complete; exit 1 on a loss

Jepsen-queue accounting: every acknowledged eventId must be in log_events exactly once,
every row must be an attempted event, dead_letters must stay empty. Loopback URLs only."""
from collections import Counter
import argparse, http.client, json, os, random, subprocess, sys, threading, time, urllib.parse, uuid

FAULTS = ["kill-gateway", "kill-consumer", "leader-kill", "pg-freeze", "replicas-kill", "redis-freeze",
          "term-gateway", "term-consumer", "kill-broker", "redis-kill", "pg-stop", "pg-disk-full"]
HOLD_S = {"pg-stop": (60, 60), "pg-freeze": (20, 20), "redis-freeze": (20, 20), "pg-disk-full": (10, 20)}
RETRIES, THREADS, PERIOD = 4, 6, 0.1   # per client: a request every 100 ms, 4 retries (0.5 s .. 4 s)
DRAIN_S, TIMEOUT_S = 90, 15            # TIMEOUT_S > PRODUCE_TIMEOUT_MS: a 503 arrives before it


def plan(a):
    rng = random.Random(f"{a.seed}:{a.run}:{a.fault}")
    if a.fault == "kill-consumer":  # three kills, each in its own stretch of the load
        for _ in range(3):
            print(f"{rng.uniform(3, 7):.1f} {rng.uniform(0, 1.5):.1f}")
    else:
        print(f"{rng.uniform(4, 12):.1f} {rng.uniform(*HOLD_S.get(a.fault, (1, 5))):.1f}")


def psql(db, sql, timeout=60):
    out = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PGCONNECT_TIMEOUT=str(min(timeout, 10))))
    if out.returncode:
        raise RuntimeError(out.stderr.strip())
    return [line.split("|") for line in out.stdout.splitlines() if line]


def send(host, port, path, body):
    """One try: ("ack", status, ids) | ("refused", status, None) | ("unknown", error, None)."""
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", path, body, {"content-type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if 200 <= r.status < 300:
            doc = json.loads(data)
            return "ack", r.status, doc.get("eventIds") or [doc.get("eventId")]
        return "refused", r.status, None
    except (OSError, http.client.HTTPException, ValueError) as e:
        return "unknown", type(e).__name__, None
    finally:
        conn.close()


def sample_stored(a, samples, done):
    """Every 0.5 s until `done` (set after the drain): (time, rows in log_events); no sample
    while PostgreSQL is down or frozen. The first rise after a heal is when storing resumed."""
    while not done.is_set():
        t = time.time()
        try:
            samples.append((t, int(psql(a.db, "SELECT count(*) FROM log_events", timeout=2)[0][0])))
        except (RuntimeError, subprocess.TimeoutExpired, IndexError, ValueError):
            pass
        done.wait(max(0.0, t + 0.5 - time.time()))


def drive(a, targets, records, lock):
    stop_file = os.path.join(a.dir, "stop")

    def client(k):
        rng = random.Random(f"{a.seed}:{a.run}:client{k}")
        nxt = time.monotonic()
        while not os.path.exists(stop_file):
            n = 1 if rng.random() < 0.5 else 10
            now = int(time.time() * 1000)
            evs = [{"eventId": str(uuid.uuid4()), "correlationId": f"faults-{a.run}-{k}", "severity": "INFO",
                    "message": f"fault matrix {a.fault}", "source": "faults.py", "timestamp": now}
                   for _ in range(n)]
            path, body = ("/api/logs", evs[0]) if n == 1 else ("/api/logs/batch", evs)
            body = json.dumps(body).encode()
            rec = {"ids": [e["eventId"] for e in evs], "tries": [], "acked": None}
            for attempt in range(RETRIES + 1):  # the same body, so the same eventIds, every time
                host, port = targets[(k + attempt) % len(targets)]  # a retry goes to the next gateway
                t0 = time.time()
                outcome, status, acked = send(host, port, path, body)
                rec["tries"].append([round(t0, 3), round(time.time(), 3), outcome, status])
                if outcome == "ack":
                    rec["acked"] = acked
                if outcome == "ack" or (outcome == "refused" and status != 503) or attempt == RETRIES:
                    break
                time.sleep(0.5 * 2 ** attempt)
            with lock:
                records.append(rec)
            nxt = max(nxt + PERIOD, time.monotonic() - PERIOD)
            time.sleep(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(a):
    targets = []
    for url in a.url.split(","):
        u = urllib.parse.urlsplit(url)
        if u.hostname not in ("127.0.0.1", "localhost"):
            sys.exit(f"refusing non-loopback URL {url}")
        targets.append((u.hostname, u.port))
    records, lock, samples, done = [], threading.Lock(), [], threading.Event()
    sampler = threading.Thread(target=sample_stored, args=(a, samples, done))
    sampler.start()
    started = time.time()
    drive(a, targets, records, lock)
    stopped = time.time()
    attempted = {i for r in records for i in r["ids"]}
    acked = {i for r in records if r["acked"] for i in r["acked"]}
    mismatched = sum(1 for r in records if r["acked"] and sorted(r["acked"]) != sorted(r["ids"]))
    deadline, counts = stopped + DRAIN_S, {}
    while True:  # drain: until every acknowledged id is a row, or the deadline
        counts = {i: int(c) for i, c in psql(a.db, "SELECT event_id, count(*) FROM log_events GROUP BY 1")}
        if acked <= counts.keys() or time.time() > deadline:
            break
        time.sleep(1)
    drained = time.time() - stopped
    done.set()
    sampler.join()
    samples.append((time.time(), sum(counts.values())))  # the drain's last count
    dead = int(psql(a.db, "SELECT count(*) FROM dead_letters")[0][0])
    heal, heal_failures = {"fault": [], "start": [], "ready": []}, []  # faults.sh: "fault|start|ready TS", "FAILED what"
    if os.path.exists(os.path.join(a.dir, "heals")):
        for line in open(os.path.join(a.dir, "heals")):
            what, ts = line.split()
            (heal_failures.append(ts) if what == "FAILED" else heal[what].append(float(ts)))
    heals = heal["ready"]
    ack_times = sorted(t[1] for r in records for t in r["tries"] if t[2] == "ack")
    # Recovered = acknowledging again (first 2xx after the heal) and storing again (the first
    # row count above the last one seen before the heal); the later of the two.
    recoveries = []
    for h in heals:
        acked_again = next((t for t in ack_times if t >= h), None)
        before = max((c for t, c in samples if t < h), default=0)
        stored_again = next((t for t, c in samples if t >= h and c > before), None)
        recoveries.append(None if acked_again is None or stored_again is None
                          else max(acked_again, stored_again) - h)
    bound = rate_bound(a, records, heal) if a.rate_bound else None
    lost = sorted(acked - counts.keys())
    res = {
        "run": a.run, "fault": a.fault, "requests": len(records), "tries": sum(len(r["tries"]) for r in records),
        "attempts": len(attempted), "acknowledged": len(acked), "stored": len(counts),
        "lost": len(lost), "duplicated": sum(1 for c in counts.values() if c > 1),
        "unexpected": len(counts.keys() - attempted), "dead_letters": dead, "id_mismatch": mismatched,
        "recovered": sum(len(r["acked"]) for r in records if r["acked"] and r["tries"][0][2] != "ack"),
        "unknown": sum(len(r["ids"]) for r in records if r["tries"][-1][2] == "unknown"),
        "refused": sum(len(r["ids"]) for r in records if r["tries"][-1][2] == "refused"),
        "refused_by": dict(Counter(str(r["tries"][-1][3]) for r in records if r["tries"][-1][2] == "refused")),
        "recovery_s": round(max(recoveries), 2) if heals and None not in recoveries else None,
        "heal_s": round(max(d - s for s, d in zip(heal["start"], heals)), 2) if heals else None,
        "healed": bool(heals) and not heal_failures and None not in recoveries,
        "heal_failures": heal_failures, "load_s": round(stopped - started, 1), "drain_s": round(drained, 1),
        "lost_ids": lost[:20], "duplicated_ids": [i for i, c in counts.items() if c > 1][:20],
        "unexpected_ids": sorted(counts.keys() - attempted)[:20], "rate_bound": bound,
    }
    with open(os.path.join(a.dir, "attempts.jsonl"), "w") as f:  # the evidence, per request
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(a.results, "a") as f:
        f.write(json.dumps(res) + "\n")
    rec = "-" if res["recovery_s"] is None else f"{res['recovery_s']} s"
    print(f"run {a.run} {a.fault}: attempts {res['attempts']} ({res['requests']} requests, {res['tries']} tries), "
          f"acknowledged {res['acknowledged']}, stored {res['stored']}, lost {res['lost']}, "
          f"duplicated {res['duplicated']}, unexpected {res['unexpected']}, dead letters {dead}, "
          f"recovered {res['recovered']}, refused {res['refused']} (requests by status {res['refused_by']}), unknown {res['unknown']}, "
          f"recovery {rec} (heal took {res['heal_s']} s), healed {'yes' if res['healed'] else 'NO ' + ' '.join(heal_failures)}, "
          f"load {res['load_s']} s, drain {res['drain_s']} s", flush=True)
    if bound:
        print(f"  Redis frozen: {bound['acked']} events acknowledged in {bound['window_s']} s, bound "
              f"[{bound['min']}, {bound['max']}] ({'within' if bound['ok'] else 'BROKEN'})", flush=True)
    if lost:
        print(f"  LOST ids (first 20): {' '.join(lost[:20])}", flush=True)


def bucket(rate):
    """Events a pool's bucket holds (README: RATE_BURST_MS 200, RATE_BURST_MAX_EVENTS 200)."""
    return min(max(min(rate, 50.0), rate * 0.2), 200.0)


def rate_bound(a, records, heal):
    """While Redis is frozen each of R gateways admits at rate ÷ R from its local buckets. Over
    the tries that started between 0.5 s after the freeze and 1 s before the thaw (so that each
    was admitted while Redis was frozen): acknowledged events ≤ rate × W plus, per gateway, both
    pools' full buckets and the lease slices (5 % of a pool's rate) it may still hold; and at
    least half the rate (the gateways keep serving)."""
    if not heal["fault"] or not heal["start"]:
        return {"ok": False, "why": "no freeze recorded"}
    lo, hi = heal["fault"][0] + 0.5, heal["start"][0] - 1.0
    acked = sum(len(r["acked"]) for r in records if r["acked"]
                for t in r["tries"] if t[2] == "ack" and lo <= t[0] < hi)
    rate, n, share = a.rate_bound, a.replicas, a.reserved_share
    per_gateway = (bucket(rate / n * (1 - share)) + bucket(rate / n * share)
                   + max(rate * (1 - share) * 0.05, 1) + max(rate * share * 0.05, 1))
    window = hi - lo
    most, least = rate * window + n * per_gateway, 0.5 * rate * window
    return {"ok": least <= acked <= most, "acked": acked, "window_s": round(window, 1),
            "max": round(most), "min": round(least)}


def bad(r):
    return (r.get("skipped") is None and (
        r["lost"] or r["duplicated"] or r["unexpected"] or r["dead_letters"] or r["id_mismatch"]
        or not r["healed"] or (r.get("rate_bound") is not None and not r["rate_bound"]["ok"])))


def ok(a):
    results = [json.loads(line) for line in open(a.results)]
    return 1 if bad(results[-1]) else 0


def skip(a):
    with open(a.results, "a") as f:
        f.write(json.dumps({"run": a.run, "fault": a.fault, "skipped": a.why}) + "\n")
    print(f"run {a.run} {a.fault}: SKIPPED, {a.why}", flush=True)


def summary(a):
    everything = [json.loads(line) for line in open(a.results)] if os.path.exists(a.results) else []
    results = [r for r in everything if r.get("skipped") is None]
    skipped = [r for r in everything if r.get("skipped") is not None]
    head = "| fault | runs | attempts | acknowledged | stored | lost | duplicated | recovery s (max) |"
    lines = [head, "|" + "---|" * 8]
    for fault in FAULTS + ["all"]:
        rs = [r for r in results if fault in (r["fault"], "all")]
        if not rs:
            continue
        rec = [r["recovery_s"] for r in rs if r["recovery_s"] is not None]
        cells = [len(rs)] + [sum(r[k] for r in rs) for k in ("attempts", "acknowledged", "stored", "lost", "duplicated")]
        cells.append(f"{max(rec):.2f}" if rec else "-")
        cells += ["NOT HEALED"] if any(not r["healed"] for r in rs) else []
        lines.append(f"| {'**all**' if fault == 'all' else fault} | " + " | ".join(map(str, cells)) + " |")
    failed = [r for r in results if bad(r)]
    bounds = [r["rate_bound"] for r in results if r.get("rate_bound")]
    other = (f"Unexpected rows: {sum(r['unexpected'] for r in results)}; dead letters: "
             f"{sum(r['dead_letters'] for r in results)}; runs that failed a check: "
             f"{', '.join(str(r['run']) for r in failed) or 'none'}.")
    if bounds:
        other += (" Redis frozen (redis-freeze runs): acknowledged events in the window / bound: "
                  + ", ".join(f"{b.get('acked')} in {b.get('window_s')} s / [{b.get('min')}, {b.get('max')}]"
                              for b in bounds) + ".")
    if skipped:
        other += " Skipped: " + "; ".join(f"run {r['run']} {r['fault']} ({r['skipped']})" for r in skipped) + "."
    table = "\n".join(lines)
    print(table + "\n" + other)
    if a.doc and a.complete and results:
        with open(a.doc, "w") as f:
            f.write(DOC.format(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rev=a.rev, seed=a.seed,
                               cmd=a.cmd, table=table, other=other, minutes=a.minutes))
        print(f"wrote {a.doc}")
    return 1 if failed or not results else 0


DOC = """# Reliability: the fault matrix

`./integration-tests/faults.sh` runs the real processes (api-gateway, log-consumer, Apache Kafka
4.1.1 from `scripts/kafka.sh` (one node; three nodes for `leader-kill`), a private PostgreSQL
cluster (initdb'd on a free port, so that the faults can stop, freeze and fill it), and a
private Redis on a free port), drives load through the public HTTP API and injects one fault
per run. Each run has its own database, topic and consumer group. Load: 6 clients, each
sending every 100 ms either one event (`POST /api/logs`) or a batch of 10
(`POST /api/logs/batch`), each event with its own `eventId` (uuid4). A timeout, a reset or
refused connection, or a 503 is retried with the same body (so the same ids) up to 4 times,
after 0.5, 1, 2 and 4 s, each retry to the next gateway when there are two. Other 4xx
answers, 429 included, are not retried.

Each run injects the fault at a seeded moment, heals it, sends load for 8 s more, then stops the
load. It waits until every acknowledged id is a row, with a deadline of 90 s, and then checks
(Jepsen-queue style):
**lost** = acknowledged (2xx, ids from the response) but not in `log_events`; **duplicated** =
an id with more than one row; **unexpected** = a row that no client attempted; `dead_letters`
must stay empty. An event counts as **acknowledged** when any try of its request got a 2xx.
**Recovery** is the time from the end of the heal (the restarted component is back: the
service's `/health/ready` answers, `restart-node` returned, Redis answers PING, `pg_ctl start`
returned, the frozen processes got SIGCONT, the filler file is gone) until the pipeline both
acknowledges (the first 2xx after it) and stores again (the first rise of the row count, sampled
every 0.5 s, above the last count seen before the heal). A run that could not heal (the restart
did not become ready, or nothing was acknowledged or stored after the heal) fails.

- **Date**: {date}
- **Revision**: {rev} (debug binaries from `target/debug`, copied at the start)
- **Seed**: {seed}
- **Command**: `{cmd}` ({minutes} min)

{table}

{other} `attempts`, `acknowledged` and `stored` count events. Events that were attempted but
never acknowledged may be stored (a reply lost with a killed gateway); that is allowed.

## The faults

| fault | what happens |
|---|---|
| `kill-gateway` | `kill -9` the gateway, wait 1–5 s, start it again |
| `term-gateway` | SIGTERM the gateway (graceful drain), wait 1–5 s, start it again |
| `kill-consumer` | `kill -9` the consumer three times in one run, restarting it after 0–1.5 s each time |
| `term-consumer` | SIGTERM the consumer (`SHUTDOWN_GRACE_MS`), wait 1–5 s, start it again |
| `replicas-kill` | two gateways and two consumers (one group); `kill -9` the second of each, wait 1–5 s, start both again: the consumers rebalance twice, the budget stays shared in Redis |
| `kill-broker` | `scripts/kafka.sh kill-node 1 --signal KILL` (the only node), wait 1–5 s, `restart-node 1` |
| `leader-kill` | on a three-node cluster (replication 3, `min.insync.replicas=2`), `kill -9` the leader of partition 0, wait 1–5 s, restart it |
| `redis-kill` | `kill -9` the matrix's own Redis, wait 1–5 s, start it again on the same port |
| `redis-freeze` | two gateways with `RATE_MAX=200`; SIGSTOP Redis for 20 s, then SIGCONT. The gateways must keep serving at the fallback rate (rate ÷ replicas each) and never above the bound below |
| `pg-stop` | `pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery at start), 60 s down, `pg_ctl start` |
| `pg-freeze` | SIGSTOP the postmaster and every backend for 20 s (a database that hangs without resetting connections: `DB_WRITE_TIMEOUT_MS` turns it into breaker failures), then SIGCONT |
| `pg-disk-full` | the run's database lives in a tablespace on a 64 MiB tmpfs; a file fills it (writes fail with SQLSTATE 53100, `disk_full`) for 10–20 s, then is deleted. Only the tablespace fills: the WAL stays on the main disk (a full WAL disk makes PostgreSQL PANIC, which `pg-stop` already covers as a crash and restart) |

**The Redis-frozen bound.** While Redis does not answer, each of R gateways admits at most
rate ÷ R events/s from its local buckets. Counting the tries that started between 0.5 s after
the freeze and 1 s before the thaw (so each was admitted while Redis was frozen), the events
acknowledged must be at most rate × W plus, per gateway, both pools' full buckets (README:
`RATE_BURST_MS`, `RATE_BURST_MAX_EVENTS`) and the lease slices it may still hold (5 % of each
pool's rate), and at least rate × W ÷ 2 (the gateways keep serving; the offered load is
above the rate).

Run N uses fault (N − 1) mod 12 in the order kill-gateway, kill-consumer, leader-kill,
pg-freeze, replicas-kill, redis-freeze, term-gateway, term-consumer, kill-broker, redis-kill,
pg-stop, pg-disk-full, so `--runs 6` (the short form inside `./integration-tests/run.sh`) runs
the first six and `--runs 24` each one twice. `--only FAULT` repeats one fault. The moments
come from `--seed` and the run number. Per-run lines, logs, the stopped PostgreSQL cluster and
each request's tries (`attempts.jsonl`) stay in the run's temporary folder when a check fails.

## Not in the matrix

- Network faults (partitions, delay, loss) and clock jumps: they need network namespaces and
  fault-injection tools (tc/netem, iptables) that this machine's sandbox was not set up with;
  the broker and database outages above cover "the peer does not answer" and "the peer
  hangs".
- A full disk on the broker: Kafka stops the log directory (the node goes offline), which the
  `kill-broker` and `leader-kill` runs already cover as a node loss.
"""

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["plan", "run", "ok", "skip", "summary"])
    p.add_argument("--seed", default="1")
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--fault", choices=FAULTS, default="kill-gateway")
    p.add_argument("--url")
    p.add_argument("--db")
    p.add_argument("--dir")
    p.add_argument("--results")
    p.add_argument("--doc")
    p.add_argument("--complete", action="store_true")
    p.add_argument("--rev", default="?")
    p.add_argument("--cmd", default="")
    p.add_argument("--minutes", default="?")
    p.add_argument("--rate-bound", type=float, help="redis-freeze: the gateways' RATE_MAX")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--reserved-share", type=float, default=0.1)
    p.add_argument("--why", default="")
    args = p.parse_args()
    if args.mode == "plan":
        plan(args)
    elif args.mode == "run":
        run(args)
    elif args.mode == "ok":
        sys.exit(ok(args))
    elif args.mode == "skip":
        skip(args)
    else:
        sys.exit(summary(args))
