#!/usr/bin/env python3
"""One self-contained HTML page (inline SVG and CSS, no network) from a load_driver.py run:
offered / accepted / refused events per second, consumer lag against the thresholds, the
admitted rate, ERROR against INFO, p99 latency, each over the status bands, and the run's
accounting (rows stored = events answered 202).

usage: python3 scripts/load_report.py RUN.json REPORT.html"""
import html
import json
import sys

W, LEFT, RIGHT, TOP, BOTTOM = 1100, 70, 150, 34, 30
BAND = {"healthy": "#e6f4ea", "degraded": "#fff4cc", "critical": "#fbe0de"}
STATUS_INK = {"healthy": "#2e7d32", "degraded": "#b58900", "critical": "#c62828"}
INK = {"ok": "#2e7d32", "rate_limited": "#f39c12", "shed": "#c62828", "fail": "#6a1b9a",
       "offered": "#212121", "lag": "#1565c0", "rate": "#00838f", "p99": "#455a64",
       "err_ok": "#d81b60", "warn_ok": "#ef6c00", "info_ok": "#5e35b1"}


def esc(v):
    return html.escape(str(v), quote=True)


def nice_max(v):
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1
    mag = 10 ** (len(str(int(v))) - 1)
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def fmt(v):
    if v >= 1000 and v % 1000 == 0:
        return f"{v / 1000:g}k"
    return f"{v:g}"


class Chart:
    def __init__(self, title, n, ymax, height=210, unit=""):
        self.title, self.n, self.h, self.unit = title, max(n, 1), height, unit
        self.ymax = nice_max(ymax)
        self.pw, self.ph = W - LEFT - RIGHT, height - TOP - BOTTOM
        self.parts, self.legend = [], []

    def x(self, t):
        return LEFT + self.pw * t / self.n

    def y(self, v):
        return TOP + self.ph * (1 - min(v, self.ymax) / self.ymax)

    def bands(self, statuses):
        start = 0
        for k in range(1, len(statuses) + 1):
            if k == len(statuses) or statuses[k] != statuses[start]:
                st = statuses[start]
                if st in BAND:
                    self.parts.append(f'<rect class="band {st}" x="{self.x(start):.1f}" y="{TOP}" '
                                      f'width="{self.x(k) - self.x(start):.1f}" height="{self.ph}" fill="{BAND[st]}"/>')
                start = k

    def grid(self):
        for i in range(5):
            v = self.ymax * i / 4
            y = self.y(v)
            self.parts.append(f'<line x1="{LEFT}" x2="{LEFT + self.pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ccc" stroke-width="0.5"/>')
            self.parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{fmt(v)}</text>')
        step = max(1, nice_max(self.n / 12))
        t = 0
        while t <= self.n:
            x = self.x(t)
            self.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + self.ph}" y2="{TOP + self.ph + 4}" stroke="#666"/>')
            self.parts.append(f'<text x="{x:.1f}" y="{TOP + self.ph + 16}" text-anchor="middle" class="tick">{t:g}s</text>')
            t += step

    def markers(self, actions, labels=False):
        for t, text in actions:
            x = self.x(t)
            self.parts.append(f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + self.ph}" '
                              f'stroke="#444" stroke-dasharray="4 3"><title>{esc(text)}</title></line>')
            if labels:
                self.parts.append(f'<text x="{x + 3:.1f}" y="{TOP - 4}" class="tick">{esc(short(text))}</text>')

    def stack(self, layers):
        """layers: [(key, label, values)], drawn as stacked areas (bottom first)."""
        base = [0.0] * len(layers[0][2])
        for key, label, vals in layers:
            top = [b + (v or 0) for b, v in zip(base, vals)]
            # Steps: each second is a flat segment from t to t+1.
            up = []
            for k in range(len(top)):
                up += [(self.x(k), self.y(top[k])), (self.x(k + 1), self.y(top[k]))]
            down = []
            for k in reversed(range(len(base))):
                down += [(self.x(k + 1), self.y(base[k])), (self.x(k), self.y(base[k]))]
            d = "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in up + down) + "Z"
            self.parts.append(f'<path class="series" d="{d}" fill="{INK[key]}" fill-opacity="0.85" stroke="none"/>')
            self.legend.append((INK[key], label, "area"))
            base = top

    def line(self, key, label, vals, step=False, dash=None, width=2):
        segs, cur = [], []
        for k, v in enumerate(vals):
            if v is None:
                if cur:
                    segs.append(cur)
                cur = []
                continue
            if step:
                cur += [(self.x(k), self.y(v)), (self.x(k + 1), self.y(v))]
            else:
                cur.append((self.x(k + 0.5), self.y(v)))
        if cur:
            segs.append(cur)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        for seg in segs:
            if len(seg) == 1:
                seg = seg + [(seg[0][0] + 1, seg[0][1])]
            pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
            self.parts.append(f'<polyline class="series" points="{pts}" fill="none" stroke="{INK[key]}" '
                              f'stroke-width="{width}"{extra} stroke-linejoin="round"/>')
        self.legend.append((INK[key], label, "line"))

    def hline(self, v, color, label):
        y = self.y(v)
        self.parts.append(f'<line x1="{LEFT}" x2="{LEFT + self.pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
                          f'stroke-width="1.5" stroke-dasharray="6 4"/>')
        self.parts.append(f'<text x="{LEFT + 4}" y="{y - 4:.1f}" class="tick" fill="{color}">{esc(label)}</text>')

    def svg(self):
        leg = []
        for i, (color, label, kind) in enumerate(self.legend):
            y = TOP + 8 + i * 18
            x0 = LEFT + self.pw + 12
            shape = (f'<rect x="{x0}" y="{y - 8}" width="14" height="10" fill="{color}"/>' if kind == "area"
                     else f'<line x1="{x0}" x2="{x0 + 14}" y1="{y - 3}" y2="{y - 3}" stroke="{color}" stroke-width="3"/>')
            leg.append(shape + f'<text x="{x0 + 20}" y="{y + 1}" class="legend">{esc(label)}</text>')
        return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{self.h}" '
                f'viewBox="0 0 {W} {self.h}" role="img" aria-label="{esc(self.title)}">'
                f'<text x="{LEFT}" y="20" class="title">{esc(self.title)}</text>'
                + "".join(self.parts)
                + f'<rect x="{LEFT}" y="{TOP}" width="{self.pw}" height="{self.ph}" fill="none" stroke="#999"/>'
                + "".join(leg) + "</svg>")


def short(action):
    """A chart label for one of the scenario's actions."""
    for word, label in (("SIGSTOP", "consumer frozen"), ("SIGCONT", "consumer resumed"), ("stopped", "load stopped")):
        if word in action:
            return label
    return action[:24]


def sev_sum(sec, sevs, key):
    return sum(sec["by_severity"].get(s, {}).get(key, 0) for s in sevs)


def render(doc):
    secs = doc["seconds"]
    n = len(secs)
    cfg, summ, tot, acc = doc["config"], doc["summary"], doc["totals"], doc["accounting"]
    statuses = [s["status"] for s in secs]
    # Actions at the second they happened (run-relative seconds, like the x axis).
    actions = [(t, text) for t, text in doc.get("actions", []) if "SIGSTOP" in text or "SIGCONT" in text]

    def base(title, ymax, unit="", height=210, labels=False):
        c = Chart(title, n, ymax, height, unit)
        c.bands(statuses)
        c.grid()
        c.markers(actions, labels)
        return c

    offered = [s["sent"] for s in secs]
    fails = [s["s503"] + s["other"] + s["errors"] + s["other_429"] for s in secs]
    c1 = base("Events per second: offered, and how the gateway answered", max(offered + [1]) * 1.05,
              height=270, labels=True)
    c1.stack([("ok", "202 accepted", [s["ok"] for s in secs]),
              ("rate_limited", "429 rate_limited", [s["rate_limited"] for s in secs]),
              ("shed", "429 shed_severity", [s["shed"] for s in secs]),
              ("fail", "503 / no answer", fails)])
    c1.line("offered", "offered", offered, step=True, width=1.5)

    lags = [s["lag"] for s in secs]
    c2 = base("Consumer lag (records), GET /api/logs/health consumerLag",
              max([v for v in lags if v is not None] + [cfg["lag_critical"] * 1.1]))
    c2.hline(cfg["lag_normal"], STATUS_INK["degraded"], f"LAG_NORMAL {cfg['lag_normal']}")
    c2.hline(cfg["lag_critical"], STATUS_INK["critical"], f"LAG_CRITICAL {cfg['lag_critical']}")
    c2.line("lag", "consumerLag", lags)

    rates = [s["rate"] for s in secs]
    c3 = base("Admitted rate (events/s), currentRate: changes once per LAG_INTERVAL_MS",
              max([v for v in rates if v is not None] + [1]) * 1.1, height=190)
    c3.line("rate", "currentRate", rates, step=True)

    def share(sevs):
        out = []
        for s in secs:
            sent = sev_sum(s, sevs, "sent")
            out.append(round(100 * sev_sum(s, sevs, "ok") / sent, 1) if sent else None)
        return out
    c4 = base("Share of each severity class answered 202 (%): ERROR/FATAL kept while INFO/DEBUG is shed",
              100, height=190)
    c4.line("info_ok", "INFO/DEBUG", share(("TRACE", "DEBUG", "INFO")), step=True)
    c4.line("warn_ok", "WARN", share(("WARN",)), step=True, width=1.5)
    c4.line("err_ok", "ERROR/FATAL", share(("ERROR", "FATAL")), step=True)

    p99s = [s.get("p99_ms") for s in secs]
    c5 = base("p99 latency of the requests sent in each second (ms)",
              max([v for v in p99s if v is not None] + [1]), height=170)
    c5.line("p99", "p99", p99s)

    legend_bands = "".join(f'<span class="chip" style="background:{BAND[s]}">{s}</span>' for s in BAND)
    trans = "".join(f"<tr><td>{t['t']}s</td><td>{esc(t['from'])} → {esc(t['to'])}</td>"
                    f"<td>{esc(t['lag'])}</td><td>{esc(t['rate'])}</td></tr>" for t in summ["transitions"])
    acts = "".join(f"<tr><td>{t:.1f}s</td><td>{esc(text)}</td></tr>" for t, text in doc.get("actions", []))
    sev_rows = ""
    for st in ("healthy", "degraded", "critical"):
        for sev, c in sorted(summ["by_status_severity"].get(st, {}).items()):
            sev_rows += (f"<tr><td>{st}</td><td>{sev}</td><td>{c['sent']}</td><td>{c['ok']}</td>"
                         f"<td>{c['r429']}</td><td>{c['other']}</td></tr>")
    for sev, c in sorted(summ["by_severity"].items()):
        sev_rows += (f"<tr class='total'><td>whole run</td><td>{sev}</td><td>{c['sent']}</td><td>{c['ok']}</td>"
                     f"<td>{c['r429']}</td><td>{c['other']}</td></tr>")
    if acc.get("rows") is None:
        verdict = "<p>rows: not checked (no database given)</p>"
    else:
        ok = acc["pass"]
        verdict = (f"<p class='{'pass' if ok else 'fail'}'>rows stored for this run: <b>{acc['rows']}</b> "
                   f"{'=' if ok else '≠'} events answered 202: <b>{acc['events_202']}</b> — "
                   f"{'PASS' if ok else 'FAIL'}</p><p>rows by severity: "
                   + esc(", ".join(f"{k} {v}" for k, v in sorted((acc.get('rows_by_severity') or {}).items())))
                   + "</p>")
    r429 = tot["rate_limited"] + tot["shed"] + tot["other_429"]
    title = f"Backpressure run {doc['tag']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fff; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 18px 0 6px; }}
.meta {{ color: #555; margin-bottom: 8px; }}
svg.chart {{ display: block; margin: 6px 0; }}
svg .title {{ font: 600 13px system-ui, sans-serif; }} svg .tick {{ font: 11px system-ui, sans-serif; fill: #444; }}
svg .legend {{ font: 12px system-ui, sans-serif; }}
.chip {{ padding: 1px 8px; margin-right: 6px; border: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 4px 0; }} td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
td:first-child, th:first-child, td:nth-child(2) {{ text-align: left; }} tr.total td {{ background: #f4f4f4; }}
.pass {{ color: #2e7d32; }} .fail {{ color: #c62828; }}
.cols {{ display: flex; gap: 32px; flex-wrap: wrap; }}
</style></head><body>
<h1>{esc(title)}</h1>
<div class="meta">started {esc(doc['started_at'])} · scenario <b>{esc(cfg['scenario'])}</b> ·
{cfg['rate_requests']:g} requests/s × {cfg['batch']} events = <b>{cfg['offered_events_per_s']:g} events/s offered</b>
to {esc(cfg['url'])} ({cfg['concurrency']} connections, mix {esc(cfg['severity_mix'])}) ·
background: {legend_bands} · dashed verticals: the scenario's actions</div>
<div class="meta">status sequence: <b>{esc(' → '.join(summ['status_sequence']) or '-')}</b> ·
max lag <b>{summ['max_lag']}</b> · rate {summ['min_rate']} … {summ['max_rate']} ({summ['rate_changes']} changes) ·
sent {tot['sent']} events: 202 {tot['ok']}, 429 {r429} (rate_limited {tot['rate_limited']}, shed_severity {tot['shed']}),
503 {tot['s503']}, no answer {tot['errors']}</div>
{c1.svg()}
{c2.svg()}
{c3.svg()}
{c4.svg()}
{c5.svg()}
<h2>Accounting</h2>
{verdict}
<div class="cols">
<div><h2>Status transitions (as sampled once a second)</h2>
<table><tr><th>at</th><th>status</th><th>lag</th><th>rate</th></tr>{trans}</table>
<h2>Scenario actions</h2><table>{acts}</table></div>
<div><h2>Events per status and severity</h2>
<table><tr><th>status</th><th>severity</th><th>sent</th><th>202</th><th>429</th><th>other</th></tr>{sev_rows}</table></div>
</div>
<p id="selfcheck" data-ok="no">self-check not run</p>
<script>
(function () {{
  var charts = document.querySelectorAll("svg.chart").length;
  var series = document.querySelectorAll("svg.chart .series").length;
  var el = document.getElementById("selfcheck");
  el.textContent = "self-check: " + charts + " charts, " + series + " series";
  el.setAttribute("data-ok", charts === 5 && series >= 8 ? "yes" : "no");
}})();
</script>
</body></html>
"""


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1])
        return 0 if len(sys.argv) == 2 else 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    with open(sys.argv[2], "w") as f:
        f.write(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
