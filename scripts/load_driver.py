#!/usr/bin/env python3
"""Open-loop HTTP load on api-gateway with a per-second view of the backpressure story.

Sends batches of log events at a fixed request rate (stdlib asyncio, one keep-alive
connection per worker, every event distinct), and once a second prints what that second
saw: events sent, answered 202 / 429 (by the body's `error`: rate_limited, shed_severity) /
503, p99 latency, the gateway's consumerLag, currentRate and status (GET /api/logs/health),
and the consumer's in-flight, paused and breaker (GET /health on log-consumer).

--scenario stall freezes log-consumer (SIGSTOP) after a warm-up, so the lag grows under the
steady load and the gateway walks healthy -> degraded -> critical; then resumes it (SIGCONT)
and keeps the load on until the gateway is healthy at full rate again. Whatever ends the
run (the end, an error, Ctrl-C, SIGTERM), a consumer it froze gets SIGCONT.

At the end it waits for the consumer to store what was accepted, counts the rows of this
run (their `source` is a tag unique to the run) per severity through psql, writes every
second and the totals to --json and, with --report, an HTML page (load_report.py).
Exit status: 0 when rows = events answered 202 (or no --database-url), 1 otherwise, 2 for
bad arguments, 130 on Ctrl-C. Loopback URLs only.
"""
import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# What the gateway keeps for ERROR/FATAL under critical load: the class the report follows.
HIGH = ("ERROR", "FATAL")


def log(msg):
    print(f"[load] {msg}", file=sys.stderr, flush=True)


def parse_seconds(text, what):
    t = str(text).strip()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("m"):
            return float(t[:-1]) * 60
        return float(t[:-1]) if t.endswith("s") else float(t)
    except ValueError:
        raise SystemExit(f"bad {what}: {text} (e.g. 40s, 2m, 40)")


def loopback(url):
    """host, port of a loopback http:// URL; exits for anything else."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if not ok or u.scheme != "http":
        raise SystemExit(f"not a loopback http:// URL (traffic goes to this machine only): {url}")
    return host, u.port or 80


def parse_mix(text):
    weights = []
    for part in text.split(","):
        sev, _, w = part.partition(":")
        sev = sev.strip().upper()
        if sev not in SEVERITIES or not w.strip().isdigit():
            raise SystemExit(f"bad severity weight: {part} (e.g. ERROR:2,WARN:8,INFO:80,DEBUG:10)")
        weights.append((sev, int(w)))
    total = sum(w for _, w in weights)
    if total <= 0:
        raise SystemExit("severity weights sum to 0")
    # 100 slots in the mix's proportions, each severity spread evenly over them.
    placed = []
    for sev, w in weights:
        n = max(1 if w else 0, round(100 * w / total))
        placed += [((k + 0.5) / n, sev) for k in range(n)]
    return [sev for _, sev in sorted(placed)]


# --- HTTP/1.1 on raw asyncio streams ------------------------------------------------------
class Conn:
    """One keep-alive connection; `request` returns (status, body bytes)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", timeout=30.0):
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            # asyncio.timeout, not wait_for: no extra task per request.
            async with asyncio.timeout(timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.write(head.encode() + body)
                return await self._response()
        except BaseException:
            self.close()
            raise

    async def _response(self):
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def get_json(host, port, path, timeout):
    """One GET on a fresh connection: parsed JSON, or None (no answer in time, not JSON)."""
    c = Conn(host, port)
    try:
        status, body = await c.request("GET", path, timeout=timeout)
        return json.loads(body) if status == 200 else None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        c.close()


# --- one second of the run ------------------------------------------------------------------
def new_second(t):
    return {"t": t, "phase": None, "requests": 0, "sent": 0, "ok": 0, "rate_limited": 0,
            "shed": 0, "other_429": 0, "s503": 0, "other": 0, "errors": 0,
            "by_severity": {}, "lat": [], "max_late_ms": 0.0,
            "lag": None, "rate": None, "status": None, "lag_age": None,
            "consumer": None}


def add_outcome(sec, sev, n, status, reason):
    s = sec["by_severity"].setdefault(sev, {"sent": 0, "ok": 0, "r429": 0, "other": 0})
    s["sent"] += n
    sec["sent"] += n
    if status == 202:
        sec["ok"] += n
        s["ok"] += n
        return
    if status == 429:
        s["r429"] += n
        key = {"rate_limited": "rate_limited", "shed_severity": "shed"}.get(reason, "other_429")
        sec[key] += n
        return
    s["other"] += n
    if status == 503:
        sec["s503"] += n
    elif status == "error":
        sec["errors"] += n
    else:
        sec["other"] += n


def p99(values):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * 0.99))], 1)


class Run:
    def __init__(self, a):
        self.a = a
        self.host, self.port = loopback(a.url)
        self.consumer = loopback(a.consumer_url) if a.consumer_url else None
        self.path = "/api/logs" if a.batch == 1 else "/api/logs/batch"
        self.slots = parse_mix(a.severity_mix)
        self.tag = a.tag or f"load-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        self.seconds = {}
        self.phases = []          # [name, start s, end s]
        self.events_log = []      # [t, text]: the scenario's actions
        self.frozen = False       # the consumer is stopped by us
        self.next_req = 0
        self.stop_at = None       # run-relative second when the load stops
        self.start = None
        self.done = False
        self.latest_health = None
        self.rate_max_seen = 0.0
        self.interrupted = None
        self.tty = sys.stdout.isatty() if a.live == "auto" else a.live == "tty"

    # -- clock and bookkeeping --
    def now(self):
        return time.monotonic() - self.start

    def second(self, t):
        k = int(t)
        sec = self.seconds.get(k)
        if sec is None:
            sec = self.seconds[k] = new_second(k)
            sec["phase"] = self.phases[-1][0] if self.phases else None
        return sec

    def phase(self, name):
        t = round(self.now(), 1)
        if self.phases:
            self.phases[-1][2] = t
        self.phases.append([name, t, None])

    def note(self, text):
        t = round(self.now(), 1)
        self.events_log.append([t, text])
        self.emit(f"--- {t:6.1f}s  {text}")

    def emit(self, line):
        if self.tty:
            sys.stdout.write("\r\x1b[K" + line + "\n")
            sys.stdout.write(self.progress())
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # -- load --
    def body(self, i, sev):
        now = int(time.time() * 1000)
        evs = [json.dumps({"correlationId": f"{self.tag}-{i % 100}", "severity": sev,
                           "message": f"{self.tag} {sev} event {i}.{j}", "source": self.tag,
                           "timestamp": now}, separators=(",", ":"))
               for j in range(self.a.batch)]
        return (evs[0] if self.a.batch == 1 else "[" + ",".join(evs) + "]").encode()

    async def worker(self):
        conn = Conn(self.host, self.port)
        interval = 1.0 / self.a.rate
        while True:
            i = self.next_req
            self.next_req += 1
            slot = i * interval
            if self.stop_at is not None and slot >= self.stop_at:
                break
            delay = slot - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.stop_at is not None and slot >= self.stop_at:
                    break
            sev = self.slots[i % len(self.slots)]
            data = self.body(i, sev)
            t0 = time.monotonic()
            reason = None
            try:
                status, resp = await conn.request("POST", self.path, data, timeout=30.0)
                if status == 429:
                    try:
                        reason = json.loads(resp).get("error")
                    except ValueError:
                        reason = "?"
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = "error"
                await asyncio.sleep(0.05)
            took_ms = (time.monotonic() - t0) * 1000
            # Counted in the second it went out: a driver behind its schedule shows as less
            # sent, not as answers credited to seconds long gone.
            sec = self.second(t0 - self.start)
            sec["requests"] += 1
            sec["lat"].append(took_ms)
            sec["max_late_ms"] = max(sec["max_late_ms"], round(-delay * 1000, 1))
            add_outcome(sec, sev, self.a.batch, status, reason)
        conn.close()

    # -- monitor: one health sample per second --
    async def monitor(self):
        k = 0
        while not self.done:
            await asyncio.sleep(max(0.0, k + 0.5 - self.now()))
            t = self.now()
            h = await get_json(self.host, self.port, "/api/logs/health", 0.9)
            c = None
            if self.consumer and not self.frozen:
                c = await get_json(self.consumer[0], self.consumer[1], "/health", 0.4)
            sec = self.second(t)
            if h:
                self.latest_health = h
                sec["lag"], sec["rate"] = h.get("consumerLag"), h.get("currentRate")
                sec["status"], sec["lag_age"] = h.get("status"), h.get("lagAgeSeconds")
                if isinstance(sec["rate"], (int, float)):
                    self.rate_max_seen = max(self.rate_max_seen, sec["rate"])
            if self.frozen:
                sec["consumer"] = {"frozen": True}
            elif c:
                sec["consumer"] = {"inFlight": c.get("inFlight"), "paused": c.get("paused"),
                                   "breaker": c.get("breaker")}
            k = int(self.now()) + 1

    # -- live lines --
    def progress(self):
        t = self.now()
        if self.a.scenario == "none":
            frac = self.fraction_sent()
            bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
            if frac >= 1.0:
                return f"[{bar}] all {self.planned()} requests sent, {t:4.0f}s: waiting for the last answers"
            return f"[{bar}] {frac * 100:3.0f}% of {self.planned()} requests sent, {t:4.0f}s of {self.a.duration:g}s"
        ph = self.phases[-1] if self.phases else ["start", 0, None]
        return (f"[scenario stall: phase {ph[0]} for {t - ph[1]:4.0f}s, run {t:5.0f}s"
                f" of at most {self.max_seconds():.0f}s]")

    def planned(self):
        return int(self.a.rate * self.a.duration)

    def fraction_sent(self):
        return min(1.0, min(self.next_req, self.planned()) / max(1, self.planned()))

    def max_seconds(self):
        a = self.a
        if a.scenario == "none":
            return a.duration
        stall = a.stall_max if a.stall == "auto" else parse_seconds(a.stall, "--stall")
        return a.warmup + stall + a.recover_max

    def line(self, sec):
        def num(v, w=6):
            return f"{v:>{w}}" if v is not None else " " * (w - 1) + "-"
        col = {"healthy": "32", "degraded": "33", "critical": "31"}
        st = sec["status"] or "-"
        st_txt = f"{st:<8}"
        if self.tty and st in col:
            st_txt = f"\x1b[{col[st]}m{st_txt}\x1b[0m"
        c = sec["consumer"]
        if c is None:
            cons = "consumer -"
        elif c.get("frozen"):
            cons = "consumer FROZEN"
        else:
            cons = (f"consumer inFlight {c.get('inFlight')} paused {'yes' if c.get('paused') else 'no'}"
                    f" breaker {c.get('breaker')}")
        hi = {"sent": 0, "ok": 0}
        for sev in HIGH:
            s = sec["by_severity"].get(sev)
            if s:
                hi["sent"] += s["sent"]
                hi["ok"] += s["ok"]
        info = sec["by_severity"].get("INFO", {"sent": 0, "ok": 0})
        prog = ""
        if not self.tty:
            if self.a.scenario == "none":
                prog = f"{100 * self.fraction_sent():3.0f}% "
            else:
                prog = f"{sec['phase'] or '-':<8} "
        rate = sec["rate"]
        rate_txt = f"{rate:>5.0f}" if isinstance(rate, (int, float)) else "    -"
        odd = ""
        if sec["other_429"] or sec["other"]:
            odd += f" other {sec['other_429'] + sec['other']}"
        if sec["errors"]:
            odd += f" no-answer {sec['errors']}"
        if sec["max_late_ms"] > 250:
            odd += f" | driver {sec['max_late_ms'] / 1000:.1f}s behind schedule"
        return (f"{sec['t'] + 1:4d}s {prog}sent {sec['sent']:5d} | 202 {sec['ok']:5d} | 429 rate_limited "
                f"{sec['rate_limited']:5d} shed {sec['shed']:5d} | 503 {sec['s503']:3d} | p99 {num(p99(sec['lat']), 6)}ms"
                f" | lag {num(sec['lag'], 7)} rate {rate_txt} {st_txt} | {cons}"
                f" | 202/sent ERROR {hi['ok']}/{hi['sent']} INFO {info['ok']}/{info['sent']}" + odd)

    async def printer(self):
        k = 0
        while not self.done or k < len(self.seconds):
            # A second is printed 0.7 s after it ends: its requests have mostly been answered.
            wait = k + 1.7 - self.now()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.25))
                if self.tty:
                    sys.stdout.write("\r\x1b[K" + self.progress())
                    sys.stdout.flush()
                continue
            sec = self.seconds.get(k)
            # After the load, only seconds that still had requests (the health samples stay in the JSON).
            if sec and not (self.stop_at is not None and k >= self.stop_at and not sec["requests"]):
                self.emit(self.line(sec))
            elif self.done:
                break
            k += 1

    # -- the scenario --
    def signal_consumer(self, sig):
        pid = self.a.consumer_pid
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    def thaw(self):
        if self.frozen:
            self.signal_consumer(signal.SIGCONT)
            self.frozen = False
            return True
        return False

    async def wait_for(self, cond, limit):
        """Polls cond() every 0.25 s up to `limit` seconds; returns whether it held."""
        deadline = self.now() + limit
        while self.now() < deadline:
            if cond():
                return True
            await asyncio.sleep(0.25)
        return cond()

    async def scenario(self):
        a = self.a
        if a.scenario == "none":
            self.phase("load")
            self.stop_at = a.duration
            return
        self.phase("warmup")
        self.note(f"warm-up: {a.rate * a.batch:.0f} events/s offered for {a.warmup:.0f}s, consumer running")
        await asyncio.sleep(max(0.0, a.warmup - self.now()))
        if not self.signal_consumer(signal.SIGSTOP):
            raise RuntimeError(f"log-consumer (pid {a.consumer_pid}) is not running")
        self.frozen = True
        self.phase("stall")
        if a.stall == "auto":
            self.note(f"log-consumer (pid {a.consumer_pid}) frozen with SIGSTOP until the gateway has "
                      f"been critical for {a.hold:.0f}s (at most {a.stall_max:.0f}s)")
            since = [None]

            def critical_held():
                h = self.latest_health or {}
                if h.get("status") != "critical":
                    since[0] = None
                    return False
                since[0] = since[0] if since[0] is not None else self.now()
                return self.now() - since[0] >= a.hold
            if not await self.wait_for(critical_held, a.stall_max):
                self.note(f"the gateway did not stay critical within {a.stall_max:.0f}s: resuming anyway")
        else:
            stall = parse_seconds(a.stall, "--stall")
            self.note(f"log-consumer (pid {a.consumer_pid}) frozen with SIGSTOP for {stall:.0f}s")
            await asyncio.sleep(stall)
        self.thaw()
        self.phase("recovery")
        self.note(f"log-consumer resumed (SIGCONT); load stays on until healthy at rate "
                  f"{self.rate_max_seen:.0f} for {a.settle:.0f}s (at most {a.recover_max:.0f}s)")
        since = [None]

        def recovered():
            h = self.latest_health or {}
            ok = h.get("status") == "healthy" and (h.get("currentRate") or 0) >= self.rate_max_seen
            if not ok:
                since[0] = None
                return False
            since[0] = since[0] if since[0] is not None else self.now()
            return self.now() - since[0] >= a.settle
        if not await self.wait_for(recovered, a.recover_max):
            self.note(f"not healthy at full rate within {a.recover_max:.0f}s of the resume")
        self.stop_at = self.now()
        self.note("load stopped")

    async def main(self):
        self.start = time.monotonic()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(s, self.on_signal, s, main_task)
        mon = asyncio.create_task(self.monitor())
        pr = asyncio.create_task(self.printer())
        try:
            scen = asyncio.create_task(self.scenario())
            workers = [asyncio.create_task(self.worker()) for _ in range(self.a.concurrency)]
            await scen
            await asyncio.gather(*workers)
        finally:
            if self.thaw():
                self.note("log-consumer resumed (SIGCONT) on the way out")
        if self.phases:
            self.phases[-1][2] = round(self.now(), 1)
        await asyncio.sleep(1.0)  # one more health sample after the last request
        self.done = True
        await pr
        mon.cancel()
        if self.tty:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()

    def on_signal(self, sig, task):
        # The consumer first: whatever else happens, it must not stay frozen.
        self.thaw()
        self.interrupted = sig
        task.cancel()


# --- after the load: drain, accounting ----------------------------------------------------
def psql(db_url, sql):
    out = subprocess.run(["psql", db_url, "-Atqc", sql], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or "psql failed")
    return out.stdout


def rows_by_severity(db_url, tag):
    q = tag.replace("'", "''")
    counts = {}
    for line in psql(db_url, f"select severity, count(*) from log_events where source = '{q}' group by 1").split():
        sev, _, n = line.partition("|")
        counts[sev] = int(n)
    return counts


def drain_and_count(run, expected, timeout):
    """Waits for lag 0 and this run's row count to reach `expected` (or stop moving)."""
    a = run.a
    deadline = time.monotonic() + timeout
    last, stable, counts = None, 0, {}
    log(f"waiting up to {timeout:.0f}s for log-consumer to store the {expected} events answered 202")
    while True:
        h = asyncio.run(get_json(run.host, run.port, "/api/logs/health", 3)) or {}
        lag = h.get("consumerLag")
        counts = rows_by_severity(a.database_url, run.tag)
        total = sum(counts.values())
        if total == expected and lag == 0:
            break
        stable = stable + 1 if (total == last and lag == 0) else 0
        if stable >= 10 or time.monotonic() >= deadline:
            break
        last = total
        time.sleep(1)
    return counts


# --- the summary ----------------------------------------------------------------------------
def summarize(run):
    secs = [run.seconds[k] for k in sorted(run.seconds)]
    phase_at = lambda t: next((p[0] for p in reversed(run.phases) if t + 0.5 >= p[1]), None)
    out = []
    for s in secs:
        s["phase"] = s["phase"] or phase_at(s["t"])
        s["p99_ms"] = p99(s["lat"])
        s["p50_ms"] = round(sorted(s["lat"])[len(s["lat"]) // 2], 1) if s["lat"] else None
        s.pop("lat")
        out.append(s)
    totals = {k: sum(s[k] for s in out) for k in
              ("requests", "sent", "ok", "rate_limited", "shed", "other_429", "s503", "other", "errors")}
    by_sev, by_status_sev = {}, {}
    for s in out:
        for sev, c in s["by_severity"].items():
            t = by_sev.setdefault(sev, {"sent": 0, "ok": 0, "r429": 0, "other": 0})
            for k in t:
                t[k] += c[k]
            if s["status"]:
                u = by_status_sev.setdefault(s["status"], {}).setdefault(
                    sev, {"sent": 0, "ok": 0, "r429": 0, "other": 0})
                for k in u:
                    u[k] += c[k]
    seq, transitions = [], []
    for s in out:
        st = s["status"]
        if st and (not seq or seq[-1] != st):
            if seq:
                transitions.append({"t": s["t"], "from": seq[-1], "to": st, "lag": s["lag"], "rate": s["rate"]})
            seq.append(st)
    rates = [s["rate"] for s in out if isinstance(s["rate"], (int, float))]
    lags = [s["lag"] for s in out if isinstance(s["lag"], int)]
    rate_changes = sum(1 for x, y in zip(rates, rates[1:]) if x != y)
    high_critical = {"sent": 0, "ok": 0}
    for sev in HIGH:
        c = by_status_sev.get("critical", {}).get(sev)
        if c:
            high_critical["sent"] += c["sent"]
            high_critical["ok"] += c["ok"]
    return out, totals, {
        "status_sequence": seq, "transitions": transitions,
        "max_lag": max(lags) if lags else None, "min_rate": min(rates) if rates else None,
        "max_rate": max(rates) if rates else None, "rate_changes": rate_changes,
        "by_severity": by_sev, "by_status_severity": by_status_sev,
        "error_in_critical": high_critical,
        "p99_ms": p99([s["p99_ms"] for s in out if s["p99_ms"] is not None]),
    }


def main():
    if sys.version_info < (3, 11):
        raise SystemExit("load_driver.py needs Python 3.11 or later (asyncio.timeout)")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="api-gateway (loopback)")
    p.add_argument("--consumer-url", default="http://127.0.0.1:8081",
                   help="log-consumer's health server (loopback; empty: not polled)")
    p.add_argument("--rate", type=float, default=200, help="requests per second")
    p.add_argument("--batch", type=int, default=10, help="events per request (1: POST /api/logs)")
    p.add_argument("--concurrency", type=int, default=32, help="connections")
    p.add_argument("--severity-mix", default="ERROR:2,WARN:8,INFO:80,DEBUG:10")
    p.add_argument("--duration", type=float, default=30, help="seconds of load (--scenario none)")
    p.add_argument("--scenario", choices=("none", "stall"), default="none")
    p.add_argument("--consumer-pid", type=int, help="log-consumer's pid (--scenario stall)")
    p.add_argument("--warmup", type=float, default=20, help="seconds before the stall")
    p.add_argument("--stall", default="auto",
                   help="how long the consumer stays frozen: 40s, 2m, or auto (until critical for --hold)")
    p.add_argument("--hold", type=float, default=15, help="auto stall: seconds of critical before the resume")
    p.add_argument("--stall-max", type=float, default=300, help="auto stall: longest freeze")
    p.add_argument("--settle", type=float, default=10, help="seconds healthy at full rate that end the run")
    p.add_argument("--recover-max", type=float, default=180, help="longest recovery phase")
    p.add_argument("--database-url", help="count this run's rows here (psql); none: no row check")
    p.add_argument("--drain-timeout", type=float, default=180)
    p.add_argument("--tag", help="the events' source (default load-<time>-<pid>)")
    p.add_argument("--lag-normal", type=int, default=10000, help="the gateway's LAG_NORMAL (report lines)")
    p.add_argument("--lag-critical", type=int, default=50000, help="the gateway's LAG_CRITICAL (report lines)")
    p.add_argument("--json", help="write the run here")
    p.add_argument("--report", help="and an HTML page here (load_report.py)")
    p.add_argument("--live", choices=("auto", "tty", "plain"), default="auto",
                   help="auto: a redrawn progress line on a terminal, plain lines otherwise")
    a = p.parse_args()
    if a.rate <= 0 or not 1 <= a.batch <= 1000 or not 1 <= a.concurrency <= 1000:
        p.error("--rate > 0, --batch 1..1000, --concurrency 1..1000")
    if a.scenario == "stall" and not a.consumer_pid:
        p.error("--scenario stall needs --consumer-pid")
    if a.stall != "auto":
        parse_seconds(a.stall, "--stall")
    if a.database_url and not shutil.which("psql"):
        p.error("--database-url needs psql")

    run = Run(a)
    log(f"{a.rate:g} requests/s x {a.batch} event(s) = {a.rate * a.batch:g} events/s offered to "
        f"{a.url}{run.path}, {a.concurrency} connections, mix {a.severity_mix}, source {run.tag}")
    if a.scenario == "stall":
        log(f"scenario stall: warm-up {a.warmup:g}s, consumer pid {a.consumer_pid} frozen "
            f"({'auto: until critical for %gs' % a.hold if a.stall == 'auto' else a.stall}), then recovery")
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rc = 0
    try:
        asyncio.run(run.main())
    except asyncio.CancelledError:
        pass
    except RuntimeError as e:
        log(f"error: {e}")
        rc = 1
    finally:
        run.thaw()
    if run.interrupted:
        log(f"interrupted by signal {run.interrupted}: the consumer was resumed; writing what was measured")
        rc = 130
    secs, totals, summary = summarize(run)
    accounting = {"events_202": totals["ok"], "rows": None, "rows_by_severity": None, "pass": None}
    if a.database_url and rc == 0:
        counts = drain_and_count(run, totals["ok"], a.drain_timeout)
        rows = sum(counts.values())
        accounting.update(rows=rows, rows_by_severity=counts, **{"pass": rows == totals["ok"]})
    doc = {
        "version": 1, "started_at": started_at, "tag": run.tag,
        "config": {"url": a.url, "consumer_url": a.consumer_url, "rate_requests": a.rate, "batch": a.batch,
                   "offered_events_per_s": a.rate * a.batch, "concurrency": a.concurrency,
                   "severity_mix": a.severity_mix, "scenario": a.scenario, "duration": a.duration,
                   "warmup": a.warmup, "stall": a.stall, "hold": a.hold,
                   "lag_normal": a.lag_normal, "lag_critical": a.lag_critical},
        "phases": run.phases, "actions": run.events_log, "seconds": secs, "totals": totals,
        "summary": summary, "accounting": accounting,
    }
    print_summary(doc)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"run data: {a.json}")
    if a.report:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import load_report
        with open(a.report, "w") as f:
            f.write(load_report.render(doc))
        log(f"report: {a.report}")
    if rc == 0 and accounting["pass"] is False:
        rc = 1
    return rc


def print_summary(doc):
    t, s, acc = doc["totals"], doc["summary"], doc["accounting"]
    out = sys.stderr
    print("", file=out)
    print(f"events sent:     {t['sent']} in {t['requests']} requests", file=out)
    print(f"answered:        202 {t['ok']}, 429 {t['rate_limited'] + t['shed'] + t['other_429']} "
          f"(rate_limited {t['rate_limited']}, shed_severity {t['shed']}), 503 {t['s503']}, "
          f"other {t['other']}, no answer {t['errors']}", file=out)
    print(f"p99 latency:     {s['p99_ms']} ms (worst second)", file=out)
    print(f"status sequence: {' -> '.join(s['status_sequence']) or '-'}; max lag {s['max_lag']}, "
          f"rate {s['min_rate']}..{s['max_rate']} ({s['rate_changes']} changes)", file=out)
    for sev in SEVERITIES[::-1]:
        c = s["by_severity"].get(sev)
        if c:
            print(f"  {sev:<5} sent {c['sent']:7d}  202 {c['ok']:7d}  429 {c['r429']:7d}  other {c['other']}", file=out)
    for st in ("healthy", "degraded", "critical"):
        per = s["by_status_severity"].get(st)
        if per:
            parts = ", ".join(f"{sev} {c['ok']}/{c['sent']}" for sev, c in sorted(per.items()))
            print(f"  202/sent while {st}: {parts}", file=out)
    if acc["rows"] is None:
        print("rows:            not checked", file=out)
    else:
        verdict = "PASS" if acc["pass"] else "FAIL"
        print(f"rows:            {acc['rows']} stored for this run = {acc['events_202']} events answered 202: "
              f"{verdict} (by severity {acc['rows_by_severity']})", file=out)


if __name__ == "__main__":
    sys.exit(main())
