#!/usr/bin/env python3
"""Driver and checker of the fault matrix (integration-tests/faults.sh), stdlib only.

  plan    --seed S --run N --fault F   the run's fault schedule: lines "WAIT HOLD" (seconds)
  run     --url U --db URL --dir D ...  drives load until D/stop exists, drains, checks, appends
                                        one JSON line to --results and prints the run's line
  summary --results F [--doc PATH ...]  the table; writes --doc when --complete; exit 1 on a loss

Jepsen-queue accounting: every acknowledged eventId must be in log_events exactly once,
every row must be an attempted event, dead_letters must stay empty. Loopback URLs only."""
from collections import Counter
import argparse, http.client, json, os, random, subprocess, sys, threading, time, urllib.parse, uuid

FAULTS = ["kill-gateway", "kill-consumer", "term-gateway", "term-consumer", "kill-broker", "redis-kill"]
RETRIES, THREADS, PERIOD = 4, 6, 0.1   # per client: a request every 100 ms, 4 retries (0.5 s .. 4 s)
DRAIN_S, TIMEOUT_S = 90, 15            # TIMEOUT_S > PRODUCE_TIMEOUT_MS: a 503 arrives before it


def plan(a):
    rng = random.Random(f"{a.seed}:{a.run}:{a.fault}")
    if a.fault == "kill-consumer":  # three kills, each in its own stretch of the load
        for _ in range(3):
            print(f"{rng.uniform(3, 7):.1f} {rng.uniform(0, 1.5):.1f}")
    else:
        print(f"{rng.uniform(4, 12):.1f} {rng.uniform(1, 5):.1f}")


def psql(db, sql):
    out = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                         capture_output=True, text=True, timeout=60)
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


def drive(a, host, port, records, lock):
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
    u = urllib.parse.urlsplit(a.url)
    if u.hostname not in ("127.0.0.1", "localhost"):
        sys.exit(f"refusing non-loopback URL {a.url}")
    records, lock = [], threading.Lock()
    started = time.time()
    drive(a, u.hostname, u.port, records, lock)
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
    dead = int(psql(a.db, "SELECT count(*) FROM dead_letters")[0][0])
    heal, heal_failures = {"start": [], "ready": []}, []  # faults.sh: "start TS", "ready TS", "FAILED what"
    if os.path.exists(os.path.join(a.dir, "heals")):
        for line in open(os.path.join(a.dir, "heals")):
            what, ts = line.split()
            (heal_failures.append(ts) if what == "FAILED" else heal[what].append(float(ts)))
    heals = heal["ready"]
    ack_times = sorted(t[1] for r in records for t in r["tries"] if t[2] == "ack")
    recoveries = [next((t - h for t in ack_times if t >= h), None) for h in heals]
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
        "unexpected_ids": sorted(counts.keys() - attempted)[:20],
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
    if lost:
        print(f"  LOST ids (first 20): {' '.join(lost[:20])}", flush=True)


def bad(r):
    return r["lost"] or r["duplicated"] or r["unexpected"] or r["dead_letters"] or r["id_mismatch"] or not r["healed"]


def summary(a):
    results = [json.loads(line) for line in open(a.results)] if os.path.exists(a.results) else []
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
    other = (f"Unexpected rows: {sum(r['unexpected'] for r in results)}; dead letters: "
             f"{sum(r['dead_letters'] for r in results)}; runs that failed a check: "
             f"{', '.join(str(r['run']) for r in failed) or 'none'}.")
    table = "\n".join(lines)
    print(table + "\n" + other)
    if a.doc and a.complete and results:
        with open(a.doc, "w") as f:
            f.write(DOC.format(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rev=a.rev, seed=a.seed,
                               cmd=a.cmd, table=table, other=other, minutes=a.minutes))
        print(f"wrote {a.doc}")
    return 1 if failed or not results else 0


DOC = """# Reliability: the fault matrix

`./integration-tests/faults.sh` runs the real processes (api-gateway, log-consumer, a one-node
Apache Kafka 4.1.1 from `scripts/kafka.sh`, PostgreSQL, and a private Redis on a free port),
drives load through the public HTTP API and injects one fault per run. Each run has its own
database, topic and consumer group. Load: 6 clients, each sending every 100 ms either one event
(`POST /api/logs`) or a batch of 10 (`POST /api/logs/batch`), each event with its own `eventId`
(uuid4). A timeout, a reset or refused connection, or a 503 is retried with the same body (so
the same ids) up to 4 times, after 0.5, 1, 2 and 4 s. Other 4xx answers, 429 included, are
not retried.

Each run injects the fault at a seeded moment, heals it, sends load for 8 s more, then stops the
load. It waits until every acknowledged id is a row, with a deadline of 90 s, and then checks
(Jepsen-queue style):
**lost** = acknowledged (2xx, ids from the response) but not in `log_events`; **duplicated** =
an id with more than one row; **unexpected** = a row that no client attempted; `dead_letters`
must stay empty. An event counts as **acknowledged** when any try of its request got a 2xx.
**Recovery** is the time from the end of the heal (the restarted component is back: the
service's `/health/ready` answers, `restart-node` returned, Redis answers PING) to the first 2xx
after it; the per-run lines also give how long the heal itself took (the restart). For a
consumer fault the gateway never stopped answering, so recovery is near 0; the consumer's
recovery shows in the drain time of the per-run lines. A run that could not heal (the restart did not become ready, or no 2xx came after the
heal) fails.

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
| `kill-broker` | `scripts/kafka.sh kill-node 1 --signal KILL`, wait 1–5 s, `restart-node 1` |
| `redis-kill` | `kill -9` the matrix's own Redis, wait 1–5 s, start it again on the same port |

Run N uses fault (N − 1) mod 6 in the order kill-gateway, kill-consumer, term-gateway,
term-consumer, kill-broker, redis-kill, so `--runs 6` runs
each fault once and `--runs 24` runs each one 4 times. `--only FAULT` repeats one fault. The
moments come from `--seed` and the run number. Per-run lines, logs and each request's tries
(`attempts.jsonl`) stay in the run's temporary folder when a check fails.

## Not yet in the matrix

- PostgreSQL stopped, or frozen (SIGSTOP) under load: the consumer's circuit breaker and DB
  timeouts (`DB_WRITE_TIMEOUT_MS`, `BREAKER_OPEN_SECS`).
- Three-node Kafka: a partition leader killed, two of three nodes down
  (`min.insync.replicas=2`). Part of this is measured in `log-consumer/tests/consumer/broker_faults.rs`.
- A full disk on the broker or the database.
- Network faults (partitions, delay, loss), clock jumps, and several gateway or consumer replicas.
"""

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["plan", "run", "summary"])
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
    args = p.parse_args()
    if args.mode == "plan":
        plan(args)
    elif args.mode == "run":
        run(args)
    else:
        sys.exit(summary(args))
