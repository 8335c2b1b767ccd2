#!/usr/bin/env python3
"""bench/run.sh's raw.jsonl → results.json + BENCHMARKS.md: numbers and tables only.

    bench/report.py RAW                  a full run's: bench/results.json, docs/BENCHMARKS.md;
                                         a --quick run's: beside RAW
    bench/report.py --side-by-side RAW   P5's p99 ratio per configuration (./bench/run.sh p5)

One function per measure returns its results.json entry, its rows of the results table and its
detail tables. What the numbers mean and what was tried: bench/optimisations.md."""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NCPU = os.cpu_count() or 2
GOALS = {"P1": 0.5, "P2": 0.9, "P3": 0.85, "P3x": 0.85, "P4": 0.7, "P5": 0.95}
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


def per_1000(cpu_s, events):
    return cpu_s / events * 1000 if events else None


def result_row(m, what, base, ours, ratio, ok, reps, goal):
    return f"| **{m}** | {what} | {base} | {ours} | **{ratio}** {'✅' if ok else '❌'} | {reps} | {goal} |"


def not_measured(m, goal=""):
    return {"status": "not measured"}, [f"| {m} | – | – | – | – | not measured | {goal} |"], []


def table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def ratio(m, what, baseline_what, base, ours):
    """A measure's entry (ratio of medians with its spread) and its row of the results table."""
    if not base or not ours:
        return {"status": "not measured"}, [f"| {m} | {what} | – | – | – | not measured | {GOALS[m]} |"]
    res = {"baseline": med(base), "ours": med(ours), "ratio": med(ours) / med(base), "goal": GOALS[m],
           "unit": "events/s", "baseline_reps": spread(base), "ours_reps": spread(ours),
           "ratio_per_rep": spread([o / b for o, b in zip(ours, base)]), "description": what,
           "baseline_program": baseline_what}
    return res, [result_row(m, f"{what} ÷ {baseline_what}", f(res["baseline"]), f(res["ours"]), f"{res['ratio']:.3f}",
                            res["ratio"] >= GOALS[m], mmm(res["ratio_per_rep"]), f"≥ {GOALS[m]}")]


def inflight(rows, measure, base, ours):
    """The bound at the same connections: a bare producer with as many records awaiting their ack."""
    inf = get(rows, measure, "inflight")
    if not inf or not base:
        return None
    v = [r["r"]["events_per_sec"] for r in inf]
    return {"in_flight": inf[0]["r"]["in_flight"], "events_per_sec": spread(v),
            "ack_latency_mean_ms": med(r["r"]["ack_latency_mean_ms"] for r in inf),
            "ack_latency_p99_ms": med(r["r"]["ack_latency_p99_ms"] for r in inf),
            "ratio": med(v) / base, "ours_vs_ceiling": ours / med(v)}


def p1(rows, meta):
    b, o = get(rows, "P1", "baseline"), get(rows, "P1", "ours")
    res, main = ratio("P1", "gateway POST /api/logs accepted events/s", f"bare axum (parse → 202), {meta['connections']} connections",
                      [r["r"]["accepted_per_sec"] for r in b], [r["r"]["accepted_per_sec"] for r in o])
    if "ratio" not in res:
        return res, main, []
    ceil, lines = [], []
    res["inflight_ceiling"] = ic = inflight(rows, "P1", res["baseline"], res["ours"])
    if ic:
        ceil.append([f"bare producer, {ic['in_flight']} records awaiting their ack (ack mean {ic['ack_latency_mean_ms']:.2f} ms, "
                     f"p99 {ic['ack_latency_p99_ms']:.2f} ms)", f(ic["events_per_sec"]["median"]), f"{ic['ratio']:.3f}", f"{ic['ours_vs_ceiling']:.3f}"])
    bulk = [r["r"]["events_per_sec"] for r in get(rows, "P2", "baseline")]
    if bulk:
        res["broker_ceiling_ratio"] = med(bulk) / res["baseline"]
        ceil.append(["bare producer, bulk (P2's baseline, no HTTP)", f(med(bulk)), f"{res['broker_ceiling_ratio']:.3f}",
                     f"{res['ratio'] / res['broker_ceiling_ratio']:.3f}"])
    busy = [r["cpu"]["machine"] / r["r"]["seconds"] for r in b]
    broker_ev = [r["cpu"]["broker"] / r["r"]["accepted"] for r in o if r["r"]["accepted"]]
    if busy and broker_ev:
        axum_s, br = med(busy) / res["baseline"], med(broker_ev)
        res["cpu_ceiling"] = cc = {"cores": NCPU, "bare_axum_busy_cores": med(busy), "bare_axum_machine_us_per_request": axum_s * 1e6,
                                   "broker_us_per_event": br * 1e6, "events_per_sec": NCPU / (axum_s + br),
                                   "ratio": NCPU / ((axum_s + br) * res["baseline"])}
        ceil.append([f"CPU: bare axum's machine time per request ({axum_s * 1e6:.1f} µs) + broker CPU per event "
                     f"({br * 1e6:.1f} µs) on {NCPU} cores", f(cc["events_per_sec"]), f"{cc['ratio']:.3f}", f"{res['ratio'] / cc['ratio']:.3f}"])
    secs = [r["r"]["seconds"] for r in o]
    prod = [r["produce"]["sum_s"] / r["produce"]["count"] for r in o if r.get("produce", {}).get("count")]
    res["evidence"] = ev = {
        "mean_latency_ms": med(r["r"]["accepted_latency"]["mean_ms"] for r in o),
        "gateway_cores": med(r["cpu"]["gateway"] / s for r, s in zip(o, secs)),
        "broker_cores": med(r["cpu"]["broker"] / s for r, s in zip(o, secs)),
        "machine_busy_cores": med(r["cpu"]["machine"] / s for r, s in zip(o, secs)),
        "produce_round_trip_ms": med(prod) * 1000 if prod else None}
    lines = ["### P1: in-run ceilings", ""] + table(["ceiling", "events/s", "P1 at most", "ours ÷ ceiling"], ceil)
    lines += ["### P1: during the gateway's runs (medians)", ""] + table(
        ["mean latency", "produce round trip (enqueue → ack)", "gateway cores", "broker cores", f"machine busy (of {NCPU})"],
        [[f"{ev['mean_latency_ms']:.2f} ms", f(ev["produce_round_trip_ms"], 2) + " ms", f"{ev['gateway_cores']:.2f}",
          f"{ev['broker_cores']:.2f}", f"{ev['machine_busy_cores']:.2f}"]])
    return res, main, lines


def p2(rows, meta):
    res, main = ratio("P2", "gateway POST /api/logs/batch (100 events/request) events/s",
                      f"bare rdkafka producer ({meta['p2_events']} records, same broker and settings)",
                      [r["r"]["events_per_sec"] for r in get(rows, "P2", "baseline")],
                      [r["r"]["accepted_events_per_sec"] for r in get(rows, "P2", "ours")])
    o = get(rows, "P2", "ours")
    if "ratio" not in res or not all("gateway" in r["cpu"] for r in o):
        return res, main, []
    # Batches are CPU work, not waiting: the ceiling is what the gateway and the broker cost per
    # event, with both cores theirs (the load generator free).
    gw_s = med(r["cpu"]["gateway"] / r["r"]["accepted_events"] for r in o)
    br_s = med(r["cpu"]["broker"] / r["r"]["accepted_events"] for r in o)
    ceiling = NCPU / (gw_s + br_s)
    res["cpu_ceiling"] = {"gateway_us_per_event": gw_s * 1e6, "broker_us_per_event": br_s * 1e6, "events_per_sec": ceiling,
                          "ratio": ceiling / res["baseline"], "machine_busy_cores": med(r["cpu"]["machine"] / r["r"]["seconds"] for r in o)}
    lines = ["### P2: in-run ceiling", ""] + table(
        ["ceiling", "events/s", "P2 at most", "ours ÷ ceiling", "machine busy during ours (of 2)"],
        [[f"CPU: gateway ({gw_s * 1e6:.1f} µs) + broker ({br_s * 1e6:.1f} µs) per event on {NCPU} cores", f(ceiling),
          f"{ceiling / res['baseline']:.3f}", f"{res['ours'] / ceiling:.3f}", f"{res['cpu_ceiling']['machine_busy_cores']:.2f}"]])
    return res, main, lines


def p3(rows, meta, m="P3", conns=None, inflight_from="P1"):
    b, o = get(rows, m, "baseline"), get(rows, m, "ours")
    conns = conns or meta["connections"]
    # answered at enqueue: events ÷ (load + the time until that gateway's producer queue drained)
    res, main = ratio(m, f"gateway 202 after the broker's ack, {conns} connections",
                      "same gateway answering at enqueue (sustained: until its queue drained)",
                      [r["r"]["accepted"] / r["span_s"] for r in b], [r["r"]["accepted_per_sec"] for r in o])
    if "ratio" not in res:
        return res, main, []
    res["baseline_answer_rate"] = med(r["r"]["accepted_per_sec"] for r in b)
    res["ratio_answer_rate"] = res["ours"] / res["baseline_answer_rate"]
    res["baseline_drain_s"] = spread([r["drain_s"] for r in b])
    res["inflight_ceiling"] = ic = inflight(rows, inflight_from, res["baseline"], res["ours"])
    lines = table([f"{m}: enqueue gateway's answer rate", "its queue drain after each run", "ratio vs answer rate",
                   f"bound: bare producer, {ic['in_flight'] if ic else '–'} in flight", f"{m} at most", "ours ÷ bound"],
                  [[f(res["baseline_answer_rate"]), f"{res['baseline_drain_s']['median']:.2f} s", f"{res['ratio_answer_rate']:.3f}",
                    f(ic["events_per_sec"]["median"]) if ic else "–", f"{ic['ratio']:.3f}" if ic else "–",
                    f"{ic['ours_vs_ceiling']:.3f}" if ic else "–"]])
    return res, main, lines


def p4(rows, meta):
    b, o, c = get(rows, "P4", "baseline"), get(rows, "P4", "ours"), get(rows, "P4", "ceiling")
    # rows after the first batch ÷ the span of the batches' stored_at (independent of polling)
    res, main = ratio("P4", "consumer rows/s draining a backlog", f"psql \\copy of the same {meta['p4_events']} rows",
                      [r["r"]["rows"] / r["r"]["seconds"] for r in b],
                      [(r["r"]["rows"] - r["r"]["first_batch_rows"]) / r["r"]["stored_span_s"] for r in o])
    if "ratio" not in res:
        return res, main, []
    ceil = []
    fetch = [r["r"]["events_per_sec"] for r in c]
    if fetch:
        res["broker_fetch_ceiling_rows_per_sec"] = spread(fetch)
        res["fetch_ceiling_vs_copy"] = med(fetch) / res["baseline"]
        res["ours_vs_fetch_ceiling"] = res["ours"] / med(fetch)
        ceil.append(["bare consumer reading the same backlog, storing nothing", f(med(fetch)),
                     f"{res['fetch_ceiling_vs_copy']:.3f}", f"{res['ours_vs_fetch_ceiling']:.3f}"])
        read_s = med(r["cpu"]["machine"] / r["r"]["events"] for r in c)
        store_s = med(r["cpu"]["machine"] / r["r"]["rows"] for r in b)
        res["cpu_ceiling"] = cc = {"cores": NCPU, "read_machine_us_per_record": read_s * 1e6, "copy_machine_us_per_row": store_s * 1e6,
                                   "rows_per_sec": NCPU / (read_s + store_s), "ratio": NCPU / ((read_s + store_s) * res["baseline"])}
        ceil.append([f"CPU: machine time to read a record ({read_s * 1e6:.1f} µs) + to \\copy a row ({store_s * 1e6:.1f} µs) "
                     f"on {NCPU} cores", f(cc["rows_per_sec"]), f"{cc['ratio']:.3f}", f"{res['ratio'] / cc['ratio']:.3f}"])
    db = [r["r"]["batch_rows"] / r["r"]["batch_seconds_sum"] for r in o if r["r"]["batch_seconds_sum"]]
    drain = [(r, r["r"]["t1"] - r["r"]["ready_t"]) for r in o]
    res["consumer_db_side_rows_per_sec_per_writer"] = spread(db)
    res["drain_cores"] = {k: med(r["cpu"][k] / d for r, d in drain) for k in ("consumer", "broker")}
    lines = ["### P4: in-run ceilings", ""] + table(["ceiling", "rows/s", "P4 at most", "ours ÷ ceiling"], ceil)
    lines += table(["consumer's rows per second of batch-write time, per writer (min / median / max)",
                    "consumer cores while draining", "broker cores while draining"],
                   [[mmm(res["consumer_db_side_rows_per_sec_per_writer"], 0), f"{res['drain_cores']['consumer']:.2f}",
                     f"{res['drain_cores']['broker']:.2f}"]])
    return res, main, lines


def p5_config(rows, config):
    """One limited gateway configuration: 50 %, 100 % (no limiter), bound and 3x runs."""
    side = lambda s: {r["rep"]: r for r in get(rows, "P5", s, config)}  # noqa: E731
    half, full, bound, over = side("half"), side("full"), side("bound"), side("over")
    reps = [k for k in over if k in half]
    if not reps:
        return None
    S = over[reps[0]]["S"]
    p99 = lambda r: (r["r"]["accepted_latency"] or {}).get("p99_ms")  # noqa: E731
    goodput = [over[k]["r"]["accepted_per_sec"] for k in reps]
    p99_ratio = [p99(over[k]) / p99(half[k]) for k in reps]
    recovery = [over[k]["recovery_s"] for k in reps if over[k]["recovery_s"] is not None]
    bk = [k for k in reps if k in bound]
    fk = [k for k in reps if k in full]
    return {
        "capacity": S, "peak": over[reps[0]]["peak"], "ours": med(goodput), "ratio": med(goodput) / S, "goal": GOALS["P5"],
        "goodput_reps": spread(goodput), "goodput_ratio_reps": spread([g / S for g in goodput]),
        "offered_multiple": med(over[k]["r"]["sent_per_sec"] for k in reps) / S,
        "p99_ratio": med(p99_ratio), "p99_ratio_goal": 3.0, "p99_ratio_reps": spread(p99_ratio),
        "p99_half_ms": spread([p99(half[k]) for k in reps]), "p99_over_ms": spread([p99(over[k]) for k in reps]),
        "p99_over_service_ms": spread([over[k]["r"]["accepted_service_latency"]["p99_ms"] for k in reps if over[k]["r"]["accepted_service_latency"]]),
        "recovery_s": med(recovery) if recovery else None, "recovery_goal_s": 60, "recovery_reps": spread(recovery),
        "lag_at_stop": [over[k]["lag_at_stop"] for k in reps],
        "status_counts_overload": [over[k]["r"]["by_status"] for k in reps],
        "missing_retry_after": sum(over[k]["r"]["missing_retry_after"] for k in reps),
        "generator_late_starts": [over[k]["r"]["late_starts"] for k in reps],
        "machine_busy_cores_overload": spread([over[k]["cpu"]["machine"] / over[k]["r"]["seconds"] for k in reps]),
        "latency_at_half_load_ms": {q: spread([half[k]["r"]["accepted_latency"][q] for k in reps]) for q in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "p99_full_ms": spread([p99(full[k]) for k in fk]), "p99_over_vs_full": spread([p99(over[k]) / p99(full[k]) for k in fk]),
        "full_accepted_share": med(full[k]["r"]["accepted"] / full[k]["r"]["requests"] for k in fk) if fk else None,
        "p99_bound_ms": spread([p99(bound[k]) for k in bk]), "p99_bound_ratio_reps": spread([p99(bound[k]) / p99(half[k]) for k in bk]),
        "bound_goodput_ratio_reps": spread([bound[k]["r"]["accepted_per_sec"] / S for k in bk]),
        "bound_machine_busy_cores": spread([bound[k]["cpu"]["machine"] / bound[k]["r"]["seconds"] for k in bk]),
        "cpu_s_per_1000_accepted_overload": {p: med(per_1000(over[k]["cpu"][p], over[k]["r"]["accepted"]) for k in reps)
                                             for p in ("gateway", "broker", "consumer")},
        "overload_timeline": [{"first_second_accepted": t[0]["accepted"], "first_second_p99_ms": t[0]["p99_ms"],
                               "later_seconds_p99_ms_median": med(x["p99_ms"] for x in t[1:]),
                               "later_seconds_p99_ms_max": max(x["p99_ms"] for x in t[1:])}
                              for t in (over[k]["r"]["timeline"] for k in reps) if len(t) > 1],
    }


def p5(rows, meta):
    configs = {name: p5_config(rows, name) for name in ("peak", "headroom")}
    if not configs["peak"]:
        return not_measured("P5")
    res = dict(configs["peak"], headroom_config=configs["headroom"], sustainable_rate=configs["peak"]["capacity"])
    res["search"] = [{"step": r["step"], "accepted_per_sec": r["r"]["accepted_per_sec"], "lag_after": r["lag_after"],
                      "p99_ms": (r["r"]["accepted_latency"] or {}).get("p99_ms")} for r in get(rows, "P5", "search")]
    main, detail = [], []
    for name, x in configs.items():
        if not x:
            continue
        label = f"P5 (capacity = {'peak' if name == 'peak' else 'peak ÷ 2'}: {f(x['capacity'])}/s)"
        rec = x["recovery_s"]
        main += [result_row(label, f"goodput at 3× offered ({x['offered_multiple']:.1f}× reached) ÷ capacity", f(x["capacity"]),
                            f(x["ours"]), f"{x['ratio']:.3f}", x["ratio"] >= GOALS["P5"], mmm(x["goodput_ratio_reps"]), f"≥ {GOALS['P5']}"),
                 result_row(label, "p99 of accepted at 3× ÷ p99 at 50 %", f"{x['p99_half_ms']['median']:.1f} ms",
                            f"{x['p99_over_ms']['median']:.1f} ms", f"{x['p99_ratio']:.2f}", x["p99_ratio"] <= 3, mmm(x["p99_ratio_reps"], 2), "≤ 3"),
                 result_row(label, "seconds until lag < 10 000 after the overload", "", f"{f(rec, 1)} s", f"{f(rec, 1)} s",
                            rec is not None and rec <= 60, mmm(x["recovery_reps"], 1), "≤ 60 s")]
        lat = x["latency_at_half_load_ms"]
        detail += [f"### P5, capacity = {name} ({f(x['capacity'])} events/s; peak {f(x['peak'])})", ""] + table(
            ["run (min / median / max across repetitions)", "value"],
            [["latency at 50 %: p50 / p90 / p99 / max (ms, medians)", " / ".join(f"{lat[q]['median']:.1f}" for q in lat)],
             ["p99 at 3× from the actual send (ms)", mmm(x["p99_over_service_ms"], 1)],
             ["p99 at 100 %, no limiter (ms)", mmm(x["p99_full_ms"], 1)],
             ["accepted share at 100 %, no limiter", f(x["full_accepted_share"], 3)],
             ["p99 at 3× ÷ p99 at 100 %", mmm(x["p99_over_vs_full"], 2)],
             ["bound run (2 in 3 to bare axum): p99 ÷ p99 at 50 %", mmm(x["p99_bound_ratio_reps"], 2)],
             ["bound run: goodput ÷ capacity", mmm(x["bound_goodput_ratio_reps"])],
             ["bound run: machine busy cores", mmm(x["bound_machine_busy_cores"], 2)],
             [f"3×: machine busy cores (of {NCPU})", mmm(x["machine_busy_cores_overload"], 2)],
             ["3×: 429s without Retry-After", x["missing_retry_after"]]])
        detail += table(["3× rep", "answers", "generator late starts", "lag at stop", "1st second: accepted / p99 ms",
                         "later seconds: p99 median / max ms"],
                        [[i + 1, json.dumps(c), late, lag, f"{t['first_second_accepted']} / {t['first_second_p99_ms']:.1f}",
                          f"{t['later_seconds_p99_ms_median']:.1f} / {t['later_seconds_p99_ms_max']:.1f}"]
                         for i, (c, late, lag, t) in enumerate(zip(x["status_counts_overload"], x["generator_late_starts"],
                                                                   x["lag_at_stop"], x["overload_timeline"]))])
    detail += ["### P5: sustainable-rate search", ""] + table(
        ["step", "accepted/s", "p99 ms", "lag after"],
        [[s["step"], f(s["accepted_per_sec"]), f(s["p99_ms"], 1), s["lag_after"]] for s in res["search"]])
    return res, main, detail


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
    first, last = max(pts[:third]) / 1024, max(pts[-third:]) / 1024
    return {"peak_mib": max(pts) / 1024, "growth_last_vs_first": last / first - 1, "samples": len(pts), "seconds": t1 - t0}


def p6(rows, meta):
    g, c = get(rows, "P6", "gateway"), get(rows, "P6", "consumer")
    if not g or not c:
        return not_measured("P6")
    g, c = g[0], c[0]
    res = {"gateway": dict(rss_profile(g["rss_log"], g["t0"], g["t1"]), hwm_mib=g["hwm_kb"] / 1024, limit_mib=150,
                           offered_events_per_sec=g["r"]["sent_per_sec"] * 100, accepted_events_per_sec=g["r"]["accepted_events_per_sec"],
                           status_counts=g["r"]["by_status"]),
           "consumer": dict(rss_profile(c["rss_log"], c["t0"], c["t1"]), hwm_mib=c["hwm_kb"] / 1024, limit_mib=200,
                            backlog_events=c["events"], rows_per_sec=c["events"] / (c["t1"] - c["t0"]))}
    res["ratio"] = max(res["gateway"]["hwm_mib"] / 150, res["consumer"]["hwm_mib"] / 200)
    main = []
    for who, what in (("gateway", f"gateway RSS under 10× overload ({f(res['gateway']['offered_events_per_sec'])} events/s offered in batches of 100)"),
                      ("consumer", f"consumer RSS draining {f(c['events'])} events")):
        x = res[who]
        growth = x.get("growth_last_vs_first")
        main.append(result_row("P6", what, f"limit {x['limit_mib']} MiB", f"{x['hwm_mib']:.1f} MiB", f"{x['hwm_mib'] / x['limit_mib']:.2f}",
                               x["hwm_mib"] < x["limit_mib"], f"last third vs first: {'–' if growth is None else f'{growth * 100:+.1f} %'}",
                               f"< {x['limit_mib']} MiB, flat"))
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
        r = k["r"]
        secs = recovery_s(r["answered_per_second"], r["start_unix_ms"] / 1000, k["kill_unix_s"], k["rate"], r["nominal_seconds"])
        rec.append(secs)
        after = r["answered_per_second"][int(k["kill_unix_s"] - r["start_unix_ms"] / 1000):int(r["nominal_seconds"]) - 1]
        failed = sum(v for s, v in r["by_status"].items() if not s.startswith("2")) + r["errors"]
        detail.append([k["rep"], f(k["rate"]), k["leader"], f"{secs:.1f}", f(min(after) if after else None),
                       f(r["accepted_latency"]["max_ms"] if r["accepted_latency"] else None), failed])
    res = {"recovery_s": spread(rec), "ratio": med(rec), "goal_s": 10, "offered_rate": kills[0]["rate"],
           "closed_loop_capacity": cap[0]["r"]["accepted_per_sec"] if cap else None}
    main = [result_row("P7", "leader of partition 0 killed (SIGKILL), 3 nodes, replication 3, min.insync.replicas 2, at half of "
                       f"closed-loop capacity: seconds until accepted/s ≥ 90 % of {f(res['offered_rate'])}/s again",
                       f"closed loop: {f(res['closed_loop_capacity'])}/s", "", f"{res['ratio']:.1f} s", res["ratio"] <= 10,
                       mmm(res["recovery_s"], 1), "≤ 10 s")]
    lines = ["### P7: per repetition", ""] + table(
        ["rep", "offered events/s", "killed node", "recovery s", "lowest accepted/s after the kill", "max latency ms", "non-2xx or failed"], detail)
    return res, main, lines


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
    for m, side, proc, events in (("P1", "ours", "gateway", "accepted"), ("P1", "ours", "broker", "accepted"),
                                  ("P2", "ours", "gateway", "accepted_events"), ("P2", "ours", "broker", "accepted_events"),
                                  ("P2", "baseline", "broker", "events"), ("P4", "ours", "consumer", "rows"),
                                  ("P4", "ours", "broker", "rows"), ("P4", "ours", "postgres", "rows"),
                                  ("P4", "baseline", "postgres", "rows"), ("P4", "ceiling", "broker", "events")):
        v = [per_1000(r["cpu"][proc], r["r"][events]) for r in get(rows, m, side) if r["r"].get(events) and proc in r["cpu"]]
        if v:
            out[f"{proc} ({m} {side})"] = med(v)
    for k, v in (results.get("P5", {}).get("cpu_s_per_1000_accepted_overload") or {}).items():
        out[f"{k} (P5 3× overload, per accepted event)"] = v
    return out, ["## CPU-seconds per 1 000 events", ""] + table(["process (measure, side)", "CPU-s / 1 000 events"],
                                                               [[k, f"{v:.4f}"] for k, v in out.items()])


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()


def main():
    if sys.argv[1:2] == ["--side-by-side"]:
        return side_by_side([json.loads(line) for line in open(sys.argv[2]) if line.strip()])
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    meta = next(r for r in rows if r["measure"] == "meta")
    results, main_rows, details = {"broker": meta["broker"]}, [], []
    for name, fn in (("P1", p1), ("P2", p2), ("P3", p3), ("P3x", lambda r, m: p3(r, m, "P3x", m["connections"] * 4, "P3x")),
                     ("P4", p4), ("P5", p5), ("P6", p6), ("P7", p7)):
        results[name], rows_md, detail = fn(rows, meta)
        main_rows += rows_md
        details += detail
    results["cpu_seconds_per_1000_events"], cpu_md = cpu_table(rows, results)
    results["storage"], storage_md = storage(rows)
    cpu_md += storage_md
    rss = {}
    for r in get(rows, "rss", None):
        rss.update(r["r"])
    results["observed_rss_kb"] = rss
    results["meta"] = {k: meta[k] for k in ("date", "git_head", "uncommitted_paths", "repetitions",
                                            "duration_per_rep", "connections")} | {"quick": bool(meta["quick"]), "nproc": NCPU}
    # A --quick run's report stays beside its raw data: only a full run is the committed one.
    run_dir = os.path.dirname(os.path.abspath(sys.argv[1]))
    json_path, md_path = (f"{run_dir}/results.json", f"{run_dir}/BENCHMARKS.md") if meta["quick"] else \
        (f"{ROOT}/bench/results.json", f"{ROOT}/docs/BENCHMARKS.md")
    with open(json_path, "w") as out:
        json.dump(results, out, indent=2)
        out.write("\n")
    mode = "--quick" if meta["quick"] else "full"
    lines = ["# Benchmarks", "",
             f"Generated by `./bench/run.sh{' --quick' if meta['quick'] else ''}` from `{os.path.relpath(meta['run_dir'], ROOT)}/raw.jsonl`: "
             "do not edit by hand, rerun it. Numbers and tables only: what bounds each ratio, what was tried and "
             f"why is in the hand-written [bench/optimisations.md]({os.path.relpath(f'{ROOT}/bench/optimisations.md', os.path.dirname(md_path))}).", "",
             f"- date: {meta['date']}; `git rev-parse HEAD`: `{meta['git_head']}` (+{meta['uncommitted_paths']} uncommitted paths)",
             f"- broker: {meta['broker']} (one node, KRaft, `scripts/kafka.sh`); fresh PostgreSQL database; release builds",
             f"- mode: {mode}; {meta['repetitions']} repetitions of {meta['duration_per_rep']} s per side, baseline and ours "
             f"alternating; load from `loadgen` (closed loop, {meta['connections']} connections for P1/P3)",
             "- gateways outside P5/P6: `REDIS_URL=''`, `RATE_MAX=RATE_MIN=1000000`, `SHED_BELOW=TRACE` (limiter out of the way)", "",
             "## Results (ratios of medians measured side by side in this run)", ""]
    lines += table(["measure", "what ÷ baseline", "baseline (median)", "ours (median)", "ratio", "per repetition min / median / max", "goal"], [])[:2]
    lines += main_rows + [""] + details + cpu_md
    lines += ["Peak RSS (VmHWM) outside P6: " + ", ".join(f"{k} = {v / 1024:.1f} MiB" for k, v in rss.items()), "",
              "## Machine", "", "```", f"nproc: {NCPU}", sh("free -h"),
              sh("lscpu | grep -E 'Model name|^CPU\\(s\\)|Thread|Core|Socket|MHz|L3'"), sh("uname -sr"), "```", ""]
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
