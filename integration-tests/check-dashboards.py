#!/usr/bin/env python3
"""Runs every PromQL `expr` of every Grafana dashboard through a live Prometheus.

usage: check-dashboards.py PROMETHEUS_URL DASHBOARD.json...
       check-dashboards.py --list DASHBOARD.json...      (print the queries, query nothing)

A query passes when Prometheus parses it (status "success") and it returns data (a
non-empty result). Then every metric name the queries select must exist in Prometheus, so
an `or ... * 0` fallback cannot hide a misspelt name; names in DASHBOARD_SPARSE_METRICS
(space-separated) are allowed to be absent. Prints one line per check and a final
"dashboards: N passed, M failed"; exits 1 on any failure. Standard library only.
"""

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# Grafana's own variables, replaced the way Grafana would for a short range.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "15m",
    "${__rate_interval}": "1m",
    "${__interval}": "15s",
}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan",
}


def queries(paths):
    """(dashboard title, panel title, legend, expr) for every target, rows included."""
    found = []

    def walk(title, panels):
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    found.append((title, panel.get("title", "?"), target.get("legendFormat", ""), expr))
            walk(title, panel.get("panels", []))

    for path in paths:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        walk(dash.get("title", path), dash.get("panels", []))
    return found


def metric_names(expr):
    """Metric names a PromQL expression selects (functions, keywords, labels removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def query(base, promql):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400 on a parse error, with a JSON body
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError) as e:
        return {"status": "error", "error": str(e)}


def main(argv):
    if len(argv) >= 2 and argv[0] == "--list":
        for dash, panel, legend, expr in queries(argv[1:]):
            print(f"{dash} / {panel} [{legend}]: {expr}")
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    base, paths = argv[0], argv[1:]
    sparse = set(os.environ.get("DASHBOARD_SPARSE_METRICS", "").split())
    found = queries(paths)
    if not found:
        print("no expr found in " + " ".join(paths))
        print("dashboards: 0 passed, 1 failed")
        return 1
    passed = failed = 0
    names = set()
    for dash, panel, legend, expr in found:
        names |= metric_names(expr)
        promql = expr
        for var, value in GRAFANA_VARS.items():
            promql = promql.replace(var, value)
        answer = query(base, promql)
        where = f"{panel} [{legend}]"
        if answer.get("status") != "success":
            failed += 1
            print(f"FAIL  {where}: {answer.get('errorType', '')} {answer.get('error', answer)}\n      {expr}")
            continue
        result = answer.get("data", {}).get("result", [])
        if not result:
            failed += 1
            print(f"FAIL  {where}: no data\n      {expr}")
            continue
        passed += 1
        sample = result[0].get("value", [None, "?"])[1] if isinstance(result, list) else result
        print(f"ok    {where}: {len(result)} series (first {sample})")
    for name in sorted(names):
        answer = query(base, f'count({{__name__="{name}"}})')
        present = answer.get("status") == "success" and answer["data"]["result"]
        if present:
            passed += 1
            print(f"ok    metric {name} exists")
        elif name in sparse:
            print(f"skip  metric {name} absent (listed in DASHBOARD_SPARSE_METRICS)")
        else:
            failed += 1
            print(f"FAIL  metric {name} absent: no target exports it (misspelt, or never incremented?)")
    print(f"dashboards: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
