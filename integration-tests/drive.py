#!/usr/bin/env python3
"""Bounded load driver for the scenario scripts (stdlib only): sends events to the gateway at
a target rate for a fixed time, with unique eventIds, and records which ids got a 2xx.

Prints one JSON summary line: statuses, accepted events, 429s with/without Retry-After,
latency p50/p99. Loopback URLs only."""
import argparse, ipaddress, json, threading, time, urllib.error, urllib.parse, urllib.request, uuid

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--url", default="http://127.0.0.1:8080")
p.add_argument("--rate", type=float, default=500, help="events per second (offered)")
p.add_argument("--duration", type=float, default=30, help="seconds (max 600)")
p.add_argument("--batch", type=int, default=10, help="events per request (1 = /api/logs)")
p.add_argument("--severity", default="INFO", help="severity of every event")
p.add_argument("--threads", type=int, default=8)
p.add_argument("--ids", help="append accepted eventIds to this file")
a = p.parse_args()

host = urllib.parse.urlsplit(a.url).hostname or ""
if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
    raise SystemExit(f"refusing non-loopback URL {a.url}")
duration = min(a.duration, 600)
path = "/api/logs" if a.batch == 1 else "/api/logs/batch"
interval = a.batch / a.rate
lock = threading.Lock()
# reasons_429: the "error" of each 429's body; max_late_ms: how far behind its schedule the
# latest request went out (a stall makes the next requests go out back to back).
stats = {"statuses": {}, "accepted": 0, "retry_after_429": 0, "no_retry_after_429": 0,
         "reasons_429": {}, "max_late_ms": 0.0}
latencies, accepted_ids = [], []
start = time.monotonic()
next_slot = [start]


def body():
    now = int(time.time() * 1000)
    evs = [{"eventId": str(uuid.uuid4()), "correlationId": f"drive-{uuid.uuid4().hex[:8]}",
            "severity": a.severity, "message": "scenario event", "source": "drive.py",
            "timestamp": now} for _ in range(a.batch)]
    return evs, json.dumps(evs[0] if a.batch == 1 else evs).encode()


def worker():
    while True:
        with lock:
            slot = next_slot[0]
            next_slot[0] += interval
        if slot - start >= duration:
            return
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        evs, data = body()
        req = urllib.request.Request(a.url + path, data=data, headers={"content-type": "application/json"})
        t0 = time.monotonic()
        retry_after = None
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status, retry_after = e.code, e.headers.get("Retry-After")
            try:
                reason = json.loads(e.read()).get("error", "?")
            except Exception:
                reason = "?"
        except Exception:
            status = "error"
        took = time.monotonic() - t0
        with lock:
            stats["max_late_ms"] = max(stats["max_late_ms"], round(-delay * 1000, 1))
            stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
            latencies.append(took)
            if status == 202:
                stats["accepted"] += len(evs)
                accepted_ids.extend(e["eventId"] for e in evs)
            elif status == 429:
                stats["reasons_429"][reason] = stats["reasons_429"].get(reason, 0) + 1
                stats["retry_after_429" if retry_after and int(retry_after) >= 1 else "no_retry_after_429"] += 1


threads = [threading.Thread(target=worker) for _ in range(a.threads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
latencies.sort()
if latencies:
    stats["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 1)
    stats["p99_ms"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1)
stats["seconds"] = round(time.monotonic() - start, 1)
if a.ids:
    with open(a.ids, "a") as f:
        f.writelines(i + "\n" for i in accepted_ids)
print(json.dumps(stats))
