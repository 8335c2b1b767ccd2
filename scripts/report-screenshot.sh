#!/usr/bin/env bash
# Opens a load report (load-test.sh --report) in headless Chromium, screenshots it to a PNG
# and checks that the page drew its charts: the page's own self-check passed (in the DOM
# Chromium dumps), no console error was logged, and the PNG is not blank (it has the chart
# colours). Installs Debian's chromium when missing. The page is a local file; Chromium is
# told to resolve no host at all, so nothing leaves this machine.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/report-screenshot.sh REPORT.html OUT.png [--width PX] [--height PX] [--no-check]

  --width/--height  window size (default 1200 x 1500: the charts and the accounting)
  --no-check        only take the screenshot
Prints the checks it made; exits 1 if one fails.
USAGE
}

width=1200 height=1500 check=1 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --width) width=${2:?}; shift 2 ;;
    --height) height=${2:?}; shift 2 ;;
    --no-check) check=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; echo "unknown argument: $1" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -eq 2 ] || { usage >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB_TAG=report-screenshot
RUN_DIR=${RUN_DIR:-$ROOT/.run}
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

html=$(cd "$(dirname "${args[0]}")" && pwd)/$(basename "${args[0]}")
out=${args[1]}
[ -f "$html" ] || die "no such report: $html"

browser=
for b in chromium chromium-browser; do command -v "$b" >/dev/null && { browser=$b; break; }; done
if [ -z "$browser" ]; then
  step "installing Debian's chromium (headless screenshots of the report; once)"
  apt_install chromium
  browser=chromium
fi

profile=$(mktemp -d "${TMPDIR:-/tmp}/report-chromium.XXXXXX")
trap 'rm -rf "$profile"' EXIT
# Root needs --no-sandbox; the rest keeps Chromium from calling home or resolving any name.
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --no-default-browser-check
  --disable-background-networking --disable-component-update --disable-sync --disable-default-apps
  --disable-extensions --disable-dev-shm-usage --host-resolver-rules="MAP * ~NOTFOUND"
  --user-data-dir="$profile" --window-size="$width,$height")

step "screenshot of $html ($width x $height) with $browser"
"$browser" "${flags[@]}" --screenshot="$out" "file://$html" >"$profile/shot.log" 2>&1 ||
  { tail -n 20 "$profile/shot.log" >&2; die "$browser could not take the screenshot"; }
[ -s "$out" ] || { tail -n 20 "$profile/shot.log" >&2; die "$browser wrote no screenshot"; }
log "wrote $out ($(wc -c <"$out") bytes)"
[ "$check" = 1 ] || exit 0

step "checking the page: self-check, console, pixels"
"$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$html" \
  >"$profile/dom.html" 2>"$profile/console.log" || die "$browser --dump-dom failed"
grep -q 'id="selfcheck" data-ok="yes"' "$profile/dom.html" ||
  die "the page's self-check did not pass: $(grep -o 'id="selfcheck"[^<]*' "$profile/dom.html" || echo 'no self-check element')"
log "PASS page self-check: $(grep -o 'data-ok="yes">self-check: [^<]*' "$profile/dom.html" | cut -d\> -f2)"
if grep -E 'CONSOLE|Uncaught|console\.error' "$profile/console.log" >&2; then
  die "the page logged to the console (above)"
fi
log "PASS no console message"
python3 - "$out" <<'PY' || die "the screenshot looks blank"
import struct, sys, zlib

def pixels(path):
    """RGB(A) rows of an 8-bit non-interlaced PNG (what Chromium writes), no PIL."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unsupported PNG {hdr}"
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, rows, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), [], 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows

w, h, bpp, rows = pixels(sys.argv[1])
colours, non_white, total = {}, 0, 0
for r in rows[::2]:
    for x in range(0, len(r), bpp * 2):
        px = r[x:x + 3]
        colours[px] = colours.get(px, 0) + 1
        total += 1
        non_white += px != b"\xff\xff\xff"
# The charts' inks (202 green, 429 orange and red, lag blue, rate teal): each must cover pixels.
inks = {"202 green": (0x2e, 0x7d, 0x32), "lag blue": (0x15, 0x65, 0xc0), "rate teal": (0x00, 0x83, 0x8f)}
def near(c, ink):
    return all(abs(a - b) <= 40 for a, b in zip(c, ink))
seen = {name: sum(n for c, n in colours.items() if near(c, ink)) for name, ink in inks.items()}
print(f"[report-screenshot] {w}x{h}: {len(colours)} distinct colours, {100 * non_white / total:.1f}% non-white, "
      + ", ".join(f"{k} {v} px" for k, v in seen.items()), file=sys.stderr)
ok = len(colours) >= 20 and non_white / total >= 0.05 and all(v >= 50 for v in seen.values())
sys.exit(0 if ok else 1)
PY
log "PASS the screenshot has the charts' colours"
