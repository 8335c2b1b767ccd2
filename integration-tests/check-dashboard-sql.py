#!/usr/bin/env python3
"""Checks every SQL panel of the Grafana dashboards against the provisioning and a real database.

usage: check-dashboard-sql.py DATABASE_URL|- DASHBOARD.json...

For every target with `rawSql`: its datasource uid is provisioned in
grafana/provisioning/datasources/*.yml with the same type; then, unless DATABASE_URL is `-`,
the query, Grafana's macros expanded the way Grafana would for the last 15 minutes, runs
through psql against DATABASE_URL and must return at least one row (the caller has stored
matching events). Prints one line per check and "dashboard sql: N passed, M failed"; exits 1
on any failure. Standard library and psql only.
"""

import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RANGE = "now() - interval '15 minutes'"
MACROS = [
    (r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {RANGE} AND now()"),
    (r"\$__timeFrom\(\)", RANGE),
    (r"\$__timeTo\(\)", "now()"),
]

passed = failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}{': ' + detail if detail else ''}")


def provisioned():
    """uid -> type of every provisioned datasource: each `- ` list item of the YAML files,
    read flat (the files are simple; no YAML parser needed)."""
    found = {}
    for path in glob.glob(os.path.join(ROOT, "grafana/provisioning/datasources/*.yml")):
        with open(path, encoding="utf-8") as f:
            items = re.split(r"(?m)^\s*-\s", f.read())[1:]
        for item in items:
            uid = re.search(r"(?m)^\s*uid:\s*(\S+)\s*$", item)
            kind = re.search(r"(?m)^\s*type:\s*(\S+)\s*$", item)
            if uid and kind:
                found[uid.group(1)] = kind.group(1)
    return found


def sql_targets(paths):
    out = []

    def walk(title, panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("rawSql"):
                    ds = target.get("datasource") or panel.get("datasource") or {}
                    out.append((title, panel.get("title", "?"), ds, target["rawSql"]))
            walk(title, panel.get("panels", []))

    for path in paths:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        walk(dash.get("title", path), dash.get("panels", []))
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    url, paths = sys.argv[1], sys.argv[2:]
    sources = provisioned()
    targets = sql_targets(paths)
    check(bool(targets), "the dashboards hold at least one SQL panel")
    for dash, panel, ds, sql in targets:
        what = f"{dash} / {panel}"
        uid, kind = ds.get("uid"), ds.get("type")
        check(sources.get(uid) == kind, f"{what}: datasource {uid} ({kind}) is provisioned",
              f"provisioned: {sources}")
        if url == "-":
            continue
        for pattern, repl in MACROS:
            sql = re.sub(pattern, repl, sql)
        left = re.findall(r"\$\w+", sql)
        check(not left, f"{what}: every macro expanded", " ".join(left))
        run = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                             capture_output=True, text=True, timeout=60)
        rows = [line for line in run.stdout.splitlines() if line]
        check(run.returncode == 0, f"{what}: the query runs", run.stderr.strip())
        check(run.returncode == 0 and len(rows) > 0, f"{what}: it returns rows ({len(rows)})")
    print(f"dashboard sql: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
