#!/usr/bin/env python3
"""bench/run.sh's raw.jsonl → results.json + BENCHMARKS.md (a full run's: bench/, docs/; a --quick
run's: beside RAW), numbers and tables only; `--side-by-side RAW`: P5's p99 ratio per configuration.
One function per measure returns its results.json entry, its result rows and its detail tables."""
import collections
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NCPU = os.cpu_count() or 2
GOALS = {"P1": 0.5, "P2": 0.9, "P3": 0.85, "P4": 0.7, "P5": 0.95}
med = statistics.median


def spread(v):
    return {"min": min(v), "median": med(v), "max": max(v), "values": v} if v else None


def f(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def mmm(s, digits=3):
    return "–" if not s else f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"


def get(rows, measure, side, config=None):
    return sorted((r for r in rows if r.get("measure") == measure and r.get("side") == side
                   and (config is None or r.get("config") == config)), key=lambda r: r.get("rep", 0))


def result_row(m, what, base, ours, ratio, ok, reps, goal):
    return f"| **{m}** | {what} | {base} | {ours} | **{ratio}** {'✅' if ok else '❌'} | {reps} | {goal} |"


def not_measured(m, goal=""):
    return {"status": "not measured"}, [f"| {m} | – | – | – | – | not measured | {goal} |"], []


def table(header, rows, title=None):
    return ([f"### {title}", ""] if title else []) + ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def ratio(m, what, baseline_what, base, ours):
    """A measure's entry (ratio of medians with its spread) and its row of the results table."""
    if not base or not ours:
        return {"status": "not measured"}, [f"| {m} | {what} | – | – | – | not measured | {GOALS[m]} |"]
    res = {"baseline": med(base), "ours": med(ours), "ratio": med(ours) / med(base), "goal": GOALS[m],
           "unit": "events/s", "baseline_reps": spread(base), "ours_reps": spread(ours),
           "ratio_per_rep": spread([o / b for o, b in zip(ours, base)]), "description": what,
           "baseline_program": baseline_what, "ceilings": {}}
    return res, [result_row(m, f"{what} ÷ {baseline_what}", f(res["baseline"]), f(res["ours"]), f"{res['ratio']:.3f}",
                            res["ratio"] >= GOALS[m], mmm(res["ratio_per_rep"]), f"≥ {GOALS[m]}")]


def ceilings(m, res, items, unit="events/s"):
    """In-run ceilings (label, rate): what the measure's ratio can be at most, and ours against each."""
    rows = []
    for label, rate in items:
        res["ceilings"][label] = {unit: rate, "ratio_at_most": rate / res["baseline"], "ours_vs_ceiling": res["ours"] / rate}
        rows.append([label, f(rate), f"{rate / res['baseline']:.3f}", f"{res['ours'] / rate:.3f}"])
    return table(["ceiling", unit, f"{m} at most", "ours ÷ ceiling"], rows, f"{m}: in-run ceilings")


def busy(rs, proc="machine"):
    return med(r["cpu"][proc] / r["r"]["seconds"] for r in rs)


def inflight(rows):
    """P1/P3's bound: a bare producer with as many records awaiting their ack as connections."""
    inf = [r["r"] for r in get(rows, "P1", "inflight")]
    return [(f"bare producer, {inf[0]['in_flight']} records awaiting their ack (ack mean "
             f"{med(r['ack_latency_mean_ms'] for r in inf):.2f} ms, p99 {med(r['ack_latency_p99_ms'] for r in inf):.2f} ms)",
             med(r["events_per_sec"] for r in inf))] if inf else []


def p1(rows, meta):
    b, o = get(rows, "P1", "baseline"), get(rows, "P1", "ours")
    res, main = ratio("P1", "gateway POST /api/logs accepted events/s", f"bare axum (parse → 202), {meta['connections']} connections",
                      [r["r"]["accepted_per_sec"] for r in b], [r["r"]["accepted_per_sec"] for r in o])
    if "ratio" not in res:
        return res, main, []
    bulk = [r["r"]["events_per_sec"] for r in get(rows, "P2", "baseline")]
    items = inflight(rows) + ([("bare producer, bulk (P2's baseline, no HTTP)", med(bulk))] if bulk else [])
    axum_s = busy(b) / res["baseline"]
    br = med(r["cpu"]["broker"] / r["r"]["accepted"] for r in o)
    items.append((f"CPU: bare axum's machine time per request ({axum_s * 1e6:.1f} µs) + broker CPU per event "
                  f"({br * 1e6:.1f} µs) on {NCPU} cores", NCPU / (axum_s + br)))
    res["evidence"] = ev = {"mean_latency_ms": med(r["r"]["accepted_latency"]["mean_ms"] for r in o),
                            "gateway_cores": busy(o, "gateway"), "broker_cores": busy(o, "broker"), "machine_busy_cores": busy(o)}
    lines = ceilings("P1", res, items) + table(
        ["mean latency", "gateway cores", "broker cores", f"machine busy (of {NCPU})"],
        [[f"{ev['mean_latency_ms']:.2f} ms", f"{ev['gateway_cores']:.2f}", f"{ev['broker_cores']:.2f}",
          f"{ev['machine_busy_cores']:.2f}"]], "P1: during the gateway's runs (medians)")
    return res, main, lines


def p2(rows, meta):
    o = get(rows, "P2", "ours")
    res, main = ratio("P2", "gateway POST /api/logs/batch (100 events/request) events/s",
                      f"bare rdkafka producer ({meta['p2_events']} records, same broker and settings)",
                      [r["r"]["events_per_sec"] for r in get(rows, "P2", "baseline")], [r["r"]["accepted_events_per_sec"] for r in o])
    if "ratio" not in res:
        return res, main, []
    # Batches are CPU work, not waiting: the ceiling is what the gateway and the broker cost per
    # event, with both cores theirs (the load generator free).
    gw, br = (med(r["cpu"][p] / r["r"]["accepted_events"] for r in o) for p in ("gateway", "broker"))
    res["machine_busy_cores"] = busy(o)
    return res, main, ceilings("P2", res, [(f"CPU: gateway ({gw * 1e6:.1f} µs) + broker ({br * 1e6:.1f} µs) per event on "
                                            f"{NCPU} cores (machine busy during ours: {busy(o):.2f})", NCPU / (gw + br))])


def p3(rows, meta):
    # ours: P1's gateway runs; answered at enqueue: events ÷ (load + the time until its producer queue drained)
    b = get(rows, "P3", "baseline")
    res, main = ratio("P3", f"gateway 202 after the broker's ack, {meta['connections']} connections",
                      "same gateway answering at enqueue (sustained: until its queue drained)",
                      [r["r"]["accepted"] / r["span_s"] for r in b], [r["r"]["accepted_per_sec"] for r in get(rows, "P1", "ours")])
    if "ratio" not in res:
        return res, main, []
    res["baseline_answer_rate"] = med(r["r"]["accepted_per_sec"] for r in b)
    res["baseline_drain_s"] = spread([r["drain_s"] for r in b])
    items = [("enqueue gateway's answer rate (its queue drain after each run: "
              f"{res['baseline_drain_s']['median']:.2f} s)", res["baseline_answer_rate"])]
    return res, main, ceilings("P3", res, items + inflight(rows))


def p4(rows, meta):
    b, o, c = get(rows, "P4", "baseline"), get(rows, "P4", "ours"), get(rows, "P4", "ceiling")
    # rows after the first batch ÷ the span of the batches' stored_at (independent of polling)
    res, main = ratio("P4", "consumer rows/s draining a backlog", f"psql \\copy of the same {meta['p4_events']} rows",
                      [r["r"]["rows"] / r["r"]["seconds"] for r in b],
                      [(r["r"]["rows"] - r["r"]["first_batch_rows"]) / r["r"]["stored_span_s"] for r in o])
    if "ratio" not in res or not c:
        return res, main, []
    read_s = med(r["cpu"]["machine"] / r["r"]["events"] for r in c)
    store_s = med(r["cpu"]["machine"] / r["r"]["rows"] for r in b)
    return res, main, ceilings("P4", res, [
        ("bare consumer reading the same backlog, storing nothing", med(r["r"]["events_per_sec"] for r in c)),
        (f"CPU: machine time to read a record ({read_s * 1e6:.1f} µs) + to \\copy a row ({store_s * 1e6:.1f} µs) "
         f"on {NCPU} cores", NCPU / (read_s + store_s))], "rows/s")


def p5_config(rows, config):
    """One limited gateway configuration: 50 %, bound and 3x runs."""
    half, bound, over = ({r["rep"]: r for r in get(rows, "P5", s, config)} for s in ("half", "bound", "over"))
    reps = [k for k in over if k in half]
    if not reps:
        return None
    S = over[reps[0]]["S"]
    p99 = lambda r: (r["r"]["accepted_latency"] or {}).get("p99_ms")  # noqa: E731
    goodput = [over[k]["r"]["accepted_per_sec"] for k in reps]
    recovery = [over[k]["recovery_s"] for k in reps if over[k]["recovery_s"] is not None]
    bk = [k for k in reps if k in bound]
    return {
        "capacity": S, "peak": over[reps[0]]["peak"], "ours": med(goodput), "ratio": med(goodput) / S, "goal": GOALS["P5"],
        "goodput_reps": spread(goodput), "goodput_ratio_reps": spread([g / S for g in goodput]),
        "offered_multiple": med(over[k]["r"]["sent_per_sec"] for k in reps) / S,
        "p99_ratio_reps": spread([p99(over[k]) / p99(half[k]) for k in reps]), "p99_ratio_goal": 3.0,
        "p99_half_ms": spread([p99(half[k]) for k in reps]), "p99_over_ms": spread([p99(over[k]) for k in reps]),
        "p99_over_service_ms": spread([over[k]["r"]["accepted_service_latency"]["p99_ms"] for k in reps if over[k]["r"]["accepted_service_latency"]]),
        "recovery_s": med(recovery) if recovery else None, "recovery_goal_s": 60, "recovery_reps": spread(recovery),
        "per_rep": [{"rep": k, "answers": over[k]["r"]["by_status"], "generator_late_starts": over[k]["r"]["late_starts"],
                     "lag_at_stop": over[k]["lag_at_stop"]} for k in reps],
        "missing_retry_after": sum(over[k]["r"]["missing_retry_after"] for k in reps),
        "machine_busy_cores_overload": spread([busy([over[k]]) for k in reps]),
        "p99_bound_ratio_reps": spread([p99(bound[k]) / p99(half[k]) for k in bk]),
        "bound_goodput_ratio_reps": spread([bound[k]["r"]["accepted_per_sec"] / S for k in bk]),
        "bound_machine_busy_cores": spread([busy([bound[k]]) for k in bk]),
        "cpu_s_per_1000_accepted_overload": {p: med(over[k]["cpu"][p] / over[k]["r"]["accepted"] * 1000 for k in reps)
                                             for p in ("gateway", "broker", "consumer")},
    }


def p5(rows, meta):
    configs = {name: p5_config(rows, name) for name in ("peak", "headroom")}
    if not configs["peak"]:
        return not_measured("P5")
    res = dict(configs["peak"], headroom_config=configs["headroom"], sustainable_rate=configs["peak"]["capacity"])
    res["search"] = [{"step": r["step"], "accepted_per_sec": r["r"]["accepted_per_sec"], "lag_after": r["lag_after"],
                      "p99_ms": (r["r"]["accepted_latency"] or {}).get("p99_ms")} for r in get(rows, "P5", "search")]
    main, detail, reps = [], [], []
    for name, x in configs.items():
        if not x:
            continue
        label = f"P5 (capacity = {'peak' if name == 'peak' else 'peak ÷ 2'}: {f(x['capacity'])}/s)"
        rec, p99r = x["recovery_s"], x["p99_ratio_reps"]["median"]
        main += [result_row(label, f"goodput at 3× offered ({x['offered_multiple']:.1f}× reached) ÷ capacity", f(x["capacity"]),
                            f(x["ours"]), f"{x['ratio']:.3f}", x["ratio"] >= GOALS["P5"], mmm(x["goodput_ratio_reps"]), f"≥ {GOALS['P5']}"),
                 result_row(label, "p99 of accepted at 3× ÷ p99 at 50 %", f"{x['p99_half_ms']['median']:.1f} ms",
                            f"{x['p99_over_ms']['median']:.1f} ms", f"{p99r:.2f}", p99r <= 3, mmm(x["p99_ratio_reps"], 2), "≤ 3"),
                 result_row(label, "seconds until lag < 10 000 after the overload", "", f"{f(rec, 1)} s", f"{f(rec, 1)} s",
                            rec is not None and rec <= 60, mmm(x["recovery_reps"], 1), "≤ 60 s")]
        detail.append([f"{name} ({f(x['capacity'])}/s)", mmm(x["p99_over_service_ms"], 1), mmm(x["p99_bound_ratio_reps"], 2),
                       mmm(x["bound_goodput_ratio_reps"]), mmm(x["bound_machine_busy_cores"], 2),
                       mmm(x["machine_busy_cores_overload"], 2), x["missing_retry_after"]])
        reps += [[name, p["rep"], json.dumps(p["answers"]), p["generator_late_starts"], p["lag_at_stop"]] for p in x["per_rep"]]
    lines = table(["capacity", "3×: p99 from the actual send (ms)", "bound run (2 in 3 to bare axum): p99 ÷ p99 at 50 %",
                   "bound run: goodput ÷ capacity", "bound run: machine busy cores", f"3×: machine busy cores (of {NCPU})",
                   "3×: 429s without Retry-After"], detail, "P5 (min / median / max across repetitions)")
    lines += table(["capacity", "3× rep", "answers", "generator late starts", "lag at stop"], reps)
    lines += table(["step", "accepted/s", "p99 ms", "lag after"],
                   [[s["step"], f(s["accepted_per_sec"]), f(s["p99_ms"], 1), s["lag_after"]] for s in res["search"]],
                   "P5: sustainable-rate search")
    return res, main, lines


def rss_profile(path, t0, t1):
    """Peak RSS (MiB) of a sampled run and its last third against its first."""
    try:
        pts = [(float(a), int(b)) for a, b in (line.rstrip("\n").split("\t") for line in open(path)) if b.strip()]
    except (OSError, ValueError):
        return {}
    pts = [kb for t, kb in pts if t0 <= t <= t1]
    if not pts:
        return {}
    third = max(len(pts) // 3, 1)
    return {"peak_mib": max(pts) / 1024, "growth_last_vs_first": max(pts[-third:]) / max(pts[:third]) - 1}


def p6(rows, meta):
    g, c = get(rows, "P6", "gateway"), get(rows, "P6", "consumer")
    if not g or not c:
        return not_measured("P6")
    res, main = {}, []
    for who, x, limit, what in (
            ("gateway", g[0], 150, f"gateway RSS under 10× overload ({f(g[0]['r']['sent_per_sec'] * 100)} events/s offered in batches of 100)"),
            ("consumer", c[0], 200, f"consumer RSS draining {f(c[0]['events'])} events")):
        res[who] = r = dict(rss_profile(x["rss_log"], x["t0"], x["t1"]), hwm_mib=x["hwm_kb"] / 1024, limit_mib=limit)
        growth = r.get("growth_last_vs_first")
        main.append(result_row("P6", what, f"limit {limit} MiB", f"{r['hwm_mib']:.1f} MiB", f"{r['hwm_mib'] / limit:.2f}", r["hwm_mib"] < limit,
                               f"last third vs first: {'–' if growth is None else f'{growth * 100:+.1f} %'}", f"< {limit} MiB, flat"))
    return res, main, []


def recovery_s(per_second, start_s, kill_s, rate, nominal_s):
    """Seconds from the kill until accepted/s (by answer time) is >= 90 % of the rate for good:
    the end of the last second below it, minus the kill. The last, partial second is left out."""
    below = [i for i in range(int(kill_s - start_s), int(nominal_s) - 1)
             if (per_second[i] if i < len(per_second) else 0) < 0.9 * rate]
    return max(0.0, below[-1] + 1 - (kill_s - start_s)) if below else 0.0


def p7(rows, meta):
    cap, kills = get(rows, "P7", "capacity"), get(rows, "P7", "kill")
    if not kills:
        return not_measured("P7", "≤ 10 s")
    rec, detail = [], []
    for k in kills:
        r, t0 = k["r"], k["r"]["start_unix_ms"] / 1000
        secs = recovery_s(r["answered_per_second"], t0, k["kill_unix_s"], k["rate"], r["nominal_seconds"])
        rec.append(secs)
        after = r["answered_per_second"][int(k["kill_unix_s"] - t0):int(r["nominal_seconds"]) - 1]
        failed = sum(v for s, v in r["by_status"].items() if not s.startswith("2")) + r["errors"]
        detail.append([k["rep"], f(k["rate"]), k["leader"], f"{secs:.1f}", f(min(after) if after else None),
                       f(r["accepted_latency"]["max_ms"] if r["accepted_latency"] else None), failed])
    res = {"recovery_s": spread(rec), "ratio": med(rec), "goal_s": 10, "offered_rate": kills[0]["rate"],
           "closed_loop_capacity": cap[0]["r"]["accepted_per_sec"] if cap else None}
    main = [result_row("P7", "leader of partition 0 killed (SIGKILL), 3 nodes, replication 3, min.insync.replicas 2, at half of "
                       f"closed-loop capacity: seconds until accepted/s ≥ 90 % of {f(res['offered_rate'])}/s again",
                       f"closed loop: {f(res['closed_loop_capacity'])}/s", "", f"{res['ratio']:.1f} s", res["ratio"] <= 10,
                       mmm(res["recovery_s"], 1), "≤ 10 s")]
    return res, main, table(["rep", "offered events/s", "killed node", "recovery s", "lowest accepted/s after the kill",
                             "max latency ms", "non-2xx or failed"], detail, "P7: per repetition")


# Where the gateway's CPU goes: (category, test on comm, kind ([k]ernel or [.] user), symbol),
# first match wins; listed in the report in this order.
CATEGORIES = [
    ("kernel, librdkafka threads", lambda c, k, s: k == "k" and c.startswith("rdk:")),
    ("kernel (network, syscalls), tokio threads", lambda c, k, s: k == "k"),
    ("librdkafka", lambda c, k, s: c.startswith("rdk:") or s.startswith("rd_")),
    ("allocator (mimalloc)", lambda c, k, s: s.startswith(("mi_", "_mi_"))),
    ("memcpy/memmove", lambda c, k, s: re.search("memcpy|memmove", s)),
    ("clock reads", lambda c, k, s: "clock_gettime" in s),
    ("JSON + event (serde, log_event, uuid and its SHA-1)", lambda c, k, s: re.search("serde|log_event|uuid|sha1", s)),
    ("HTTP (hyper, httparse, http)", lambda c, k, s: re.search(r"hyper|httparse|\bhttp::", s)),
    ("axum/tower", lambda c, k, s: re.search("axum|tower", s)),
    ("tokio runtime (tokio, mio, futures)", lambda c, k, s: re.search("tokio|mio::|futures", s)),
    ("metrics", lambda c, k, s: "metrics" in s),
    ("gateway code", lambda c, k, s: re.search("api_gateway::|flow_control::", s)),
    ("other", lambda c, k, s: True),
]


def profile(run_dir, m, meta):
    """The gateway's self time by category, from `perf report --sort comm,dso,sym` text."""
    try:
        text = open(f"{run_dir}/prof-{m}.txt").read()
    except OSError:
        return None, [f"Where the gateway's CPU goes ({m}): no profile: "
                      f"{'perf not installed' if meta.get('perf') == 'no' else 'none recorded'}", ""]
    share, top = collections.Counter(), collections.defaultdict(list)
    for pct, comm, kind, sym in re.findall(r"^\s+([\d.]+)%\s+(\S.*?)\s{2,}\S+\s+\[(.)\]\s+(.*)$", text, re.M):
        cat = next(name for name, test in CATEGORIES if test(comm, kind, sym))
        share[cat] += float(pct)
        top[cat].append((float(pct), sym.strip()[:70]))
    res = {c: {"percent": share[c], "top": sorted(top[c], reverse=True)[:2]} for c, _ in CATEGORIES if share[c]}
    samples = " + ".join(re.findall(r"^# Samples: (\S+)", text, re.M))
    return res, table(["category (self time)", "% of the gateway's samples", "top symbols (%)"],
                      [[c, f"{x['percent']:.1f}", "; ".join(f"`{s}` {p:.1f}" for p, s in x["top"])] for c, x in res.items()],
                      f"{m}: where the gateway's CPU goes ({samples} samples at 999 Hz)")


def storage(rows):
    """Bytes one stored event takes in PostgreSQL (heap + indexes of every partition), after P4."""
    st = get(rows, "storage", None)
    if not st or not st[0]["rows"]:
        return None, []
    s = st[0]
    res = {"rows": s["rows"], "heap_bytes_per_row": s["heap_bytes"] / s["rows"], "index_bytes_per_row": s["index_bytes"] / s["rows"]}
    return res, ["## Storage per event", ""] + table(
        ["rows (after P4)", "heap bytes / row", "index bytes / row", "total bytes / row"],
        [[f(s["rows"]), f(res["heap_bytes_per_row"]), f(res["index_bytes_per_row"]),
          f(res["heap_bytes_per_row"] + res["index_bytes_per_row"])]])


def cpu_table(rows, results):
    """CPU-seconds per 1 000 events per process, the broker included (medians across repetitions)."""
    out = {}
    for m, side, procs, events in (("P1", "ours", "gateway broker", "accepted"), ("P2", "ours", "gateway broker", "accepted_events"),
                                   ("P2", "baseline", "broker", "events"), ("P4", "ours", "consumer broker postgres", "rows"),
                                   ("P4", "baseline", "postgres", "rows"), ("P4", "ceiling", "broker", "events")):
        for proc in procs.split():
            v = [r["cpu"][proc] / r["r"][events] * 1000 for r in get(rows, m, side) if r["r"].get(events) and proc in r["cpu"]]
            if v:
                out[f"{proc} ({m} {side})"] = med(v)
    for k, v in (results.get("P5", {}).get("cpu_s_per_1000_accepted_overload") or {}).items():
        out[f"{k} (P5 3× overload, per accepted event)"] = v
    return out, ["## CPU-seconds per 1 000 events", ""] + table(["process (measure, side)", "CPU-s / 1 000 events"],
                                                               [[k, f"{v:.4f}"] for k, v in out.items()])


def main():
    if sys.argv[1:2] == ["--side-by-side"]:
        return side_by_side([json.loads(line) for line in open(sys.argv[2]) if line.strip()])
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    meta = next(r for r in rows if r["measure"] == "meta")
    run_dir = os.path.dirname(os.path.abspath(sys.argv[1]))
    results, main_rows, details = {"broker": meta["broker"], "gateway_profiles": {}}, [], []
    for name, fn in (("P1", p1), ("P2", p2), ("P3", p3), ("P4", p4), ("P5", p5), ("P6", p6), ("P7", p7)):
        results[name], rows_md, detail = fn(rows, meta)
        main_rows += rows_md
        details += detail
        if name in ("P1", "P2", "P5"):
            results["gateway_profiles"][name], prof_md = profile(run_dir, name, meta)
            details += prof_md
    results["cpu_seconds_per_1000_events"], cpu_md = cpu_table(rows, results)
    results["storage"], storage_md = storage(rows)
    results["observed_rss_kb"] = rss = {k: v for r in get(rows, "rss", None) for k, v in r["r"].items()}
    results["meta"] = {k: meta[k] for k in ("date", "git_head", "uncommitted_paths", "repetitions",
                                            "duration_per_rep", "connections")} | {"quick": bool(meta["quick"]), "nproc": NCPU}
    # A --quick run's report stays beside its raw data: only a full run is the committed one.
    json_path, md_path = (f"{run_dir}/results.json", f"{run_dir}/BENCHMARKS.md") if meta["quick"] else \
        (f"{ROOT}/bench/results.json", f"{ROOT}/docs/BENCHMARKS.md")
    with open(json_path, "w") as out:
        out.write(json.dumps(results, indent=2) + "\n")
    lines = ["# Benchmarks", "",
             f"Generated by `./bench/run.sh{' --quick' if meta['quick'] else ''}` from `{os.path.relpath(meta['run_dir'], ROOT)}/raw.jsonl`: "
             "do not edit by hand, rerun it. Numbers and tables only: what bounds each ratio, what was tried and "
             f"why is in the hand-written [bench/optimisations.md]({os.path.relpath(f'{ROOT}/bench/optimisations.md', os.path.dirname(md_path))}).", "",
             f"- date: {meta['date']}; `git rev-parse HEAD`: `{meta['git_head']}` (+{meta['uncommitted_paths']} uncommitted paths)",
             f"- broker: {meta['broker']} (one node, KRaft, `scripts/kafka.sh`); fresh PostgreSQL database; release builds",
             f"- mode: {'--quick' if meta['quick'] else 'full'}; {meta['repetitions']} repetitions of {meta['duration_per_rep']} s per side, "
             f"baseline and ours alternating; load from `loadgen` (closed loop, {meta['connections']} connections for P1/P3)",
             "- gateways outside P5/P6: `REDIS_URL=''`, `RATE_MAX=RATE_MIN=1000000`, `SHED_BELOW=TRACE` (limiter out of the way)", "",
             "## Results (ratios of medians measured side by side in this run)", ""]
    lines += table(["measure", "what ÷ baseline", "baseline (median)", "ours (median)", "ratio", "per repetition min / median / max", "goal"], [])[:2]
    lines += main_rows + [""] + details + cpu_md + storage_md
    lines += ["Peak RSS (VmHWM) outside P6: " + ", ".join(f"{k} = {v / 1024:.1f} MiB" for k, v in rss.items()), "",
              "## Machine", "", "```", f"nproc: {NCPU}"] + [subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
                                                           for c in ("free -h", "lscpu | grep -E 'Model name|^CPU\\(s\\)|Thread|Core|Socket|MHz|L3'", "uname -sr")] + ["```", ""]
    with open(md_path, "w") as out:
        out.write("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")


def side_by_side(rows):
    """./bench/run.sh p5: each configuration's p99 ratio (3× / 50 %) and goodput, per repetition."""
    for name in dict.fromkeys(r["config"] for r in rows if r.get("measure") == "P5" and "config" in r):
        x = p5_config(rows, name)
        if x:
            print(f"{name}: p99 ratio min / median / max {mmm(x['p99_ratio_reps'], 2)} (per repetition "
                  f"{[round(v, 2) for v in x['p99_ratio_reps']['values']]}); p99 at 50 % {mmm(x['p99_half_ms'], 1)} ms, "
                  f"at 3× {mmm(x['p99_over_ms'], 1)} ms; goodput {mmm(x['goodput_reps'], 0)}/s")


if __name__ == "__main__":
    main()
