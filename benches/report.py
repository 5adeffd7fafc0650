#!/usr/bin/env python3
"""Summarise one benchmark run: benches/report.py RESULTS_DIR

Reads RESULTS_DIR/raw.csv (one row per timed step and run, written by run.sh), meta.json and
workloads.json; prints one markdown table per shape (medians over runs) and writes
RESULTS_DIR/summary.json with the medians and every individual run.
"""

import csv
import json
import os
import statistics
import sys
from collections import defaultdict

# (row label, step, kind, limit step or None).  kind: secs | mbps | fps | bytes | rss
ROWS = {
    "spool": [
        ("first backup, s", "backup", "secs", "compress"),
        ("first backup, MB/s", "backup", "mbps", "read"),
        ("first backup, files/s", "backup", "fps", None),
        ("no-change re-backup, s", "nochange", "secs", "stat"),
        ("no-change re-backup, files/s", "nochange", "fps", "stat"),
        ("day-2 re-backup, s", "day2", "secs", "stat"),
        ("restore (day 2), s", "restore", "secs", "write"),
        ("restore, MB/s", "restore", "mbps", "write"),
        ("stored after first backup, MB", "stored", "bytes", "compressed_size"),
        ("added by day 2, MB", "day2_added", "bytes", None),
        ("peak RSS, backups, MB", ("backup", "nochange", "day2"), "rss", None),
        ("peak RSS, restore, MB", "restore", "rss", None),
    ],
    "www": [
        ("first backup, s", "backup", "secs", "compress"),
        ("first backup, MB/s", "backup", "mbps", "read"),
        ("first backup, files/s", "backup", "fps", None),
        ("no-change re-backup, s", "nochange", "secs", "stat"),
        ("no-change re-backup, files/s", "nochange", "fps", "stat"),
        ("restore, s", "restore", "secs", "write"),
        ("restore, MB/s", "restore", "mbps", "write"),
        ("stored, MB", "stored", "bytes", "compressed_size"),
        ("peak RSS, backups, MB", ("backup", "nochange"), "rss", None),
        ("peak RSS, restore, MB", "restore", "rss", None),
    ],
    "dump": [
        ("day 1 via stdin, s", "stdin_day1", "secs", "compress"),
        ("day 1 via stdin, MB/s", "stdin_day1", "mbps", "read"),
        ("day 2 via stdin, s", "stdin_day2", "secs", "compress"),
        ("restore (day 2), s", "restore", "secs", "write"),
        ("stored after day 1, MB", "stored", "bytes", "compressed_size"),
        ("added by day 2, MB", "day2_added", "bytes", None),
        ("peak RSS, backups, MB", ("stdin_day1", "stdin_day2"), "rss", None),
        ("peak RSS, restore, MB", "restore", "rss", None),
        ("day 1 via --stdin-from-command (arc), s", "cmd_day1", "secs", "compress"),
        ("day 1 via --stdin-from-command (arc), MB/s", "cmd_day1", "mbps", "read"),
        ("day 2 via --stdin-from-command (arc), s", "cmd_day2", "secs", "compress"),
        ("added by day 2 via --stdin-from-command, MB", "cmd_day2_added", "bytes", None),
    ],
    "big": [
        ("backup of the file, s", "backup", "secs", "compress"),
        ("backup of the file, MB/s", "backup", "mbps", "read"),
        ("backup via stdin, s", "stdin", "secs", "compress"),
        ("backup via stdin, MB/s", "stdin", "mbps", "read"),
        ("stored (file), MB", "stored_file", "bytes", "compressed_size"),
        ("peak RSS, file backup, MB", "backup", "rss", None),
        ("peak RSS, stdin backup, MB", "stdin", "rss", None),
    ],
}
# A copy of /usr/share and /etc (benches/system_copy.sh): the rows of www.
ROWS["system"] = ROWS["www"]
TOOL_ORDER = ("arc", "arc-none", "restic", "borg")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, kind):
    if x is None:
        return "–"
    if kind == "secs":
        return "%.2f" % x if x < 10 else "%.1f" % x
    if kind in ("bytes", "rss"):
        return "%.1f" % (x / 1e6) if x < 100e6 else "%.0f" % (x / 1e6)
    if kind == "fps":
        return "%.0f" % x
    return "%.0f" % x if x >= 100 else "%.1f" % x  # mbps


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return "%.2f×" % (a / b)


def main():
    res = sys.argv[1]
    rows = list(csv.DictReader(open(os.path.join(res, "raw.csv"))))
    meta = json.load(open(os.path.join(res, "meta.json")))
    try:
        work = json.load(open(os.path.join(res, "workloads.json")))["shapes"]
    except (OSError, KeyError):
        work = {}
    # data[shape][tool][step] = list of per-run dicts
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        data[r["shape"]][r["tool"]][r["step"]].append(r)
    summary = {"meta": meta, "shapes": {}}
    out = []
    out.append("Benchmark run %s on %s (%d CPUs), %s runs per figure, medians; load average %s at start."
               % (meta.get("started_utc"), meta.get("host"), meta.get("cpus", 0), meta.get("runs"),
                  meta.get("loadavg_start")))
    out.append("Command: `%s`" % meta.get("command"))
    out.append("Versions: " + "; ".join("%s: %s" % kv for kv in meta.get("versions", {}).items()))
    for shape in ("spool", "www", "system", "dump", "big"):
        if shape not in data:
            continue
        d = data[shape]
        tools = [t for t in TOOL_ORDER if t in d]
        lim = d.get("limit", {})

        def steprows(tool, step):
            return d.get(tool, {}).get(step, []) if tool != "limit" else lim.get(step, [])

        def value(tool, step, kind):
            """Median over runs of the figure `kind` for one step; None if absent or failed."""
            if isinstance(step, tuple):  # peak RSS over several steps: max per run, then median
                per_run = defaultdict(list)
                for s in step:
                    for r in steprows(tool, s):
                        if r["status"] == "ok":
                            per_run[r["run"]].append(int(r["max_rss_kb"]) * 1024)
                return med([max(v) for v in per_run.values()])
            vals = []
            for r in steprows(tool, step):
                if r["status"] != "ok":
                    continue
                secs = float(r["seconds"])
                b = float(r["bytes"] or 0)
                f = float(r["files"] or 0)
                if kind == "secs":
                    vals.append(secs)
                elif kind == "mbps":
                    vals.append(b / 1e6 / secs if secs > 0 else None)
                elif kind == "fps":
                    vals.append(f / secs if secs > 0 else None)
                elif kind == "bytes":
                    vals.append(b)
                elif kind == "rss":
                    vals.append(int(r["max_rss_kb"]) * 1024)
            return med([v for v in vals if v is not None])

        def failed(tool, step):
            steps = step if isinstance(step, tuple) else (step,)
            bad = [r for s in steps for r in steprows(tool, s) if r["status"] != "ok"]
            return len(bad)

        def limit_value(lstep, kind, step):
            if lstep is None:
                return None
            if lstep == "compressed_size":
                return value("limit", lstep, "bytes")
            return value("limit", lstep, kind)

        ws = work.get(shape, {}).get("stats", {})
        desc = ", ".join(s for s in (
            "%d files" % ws["files"] if "files" in ws else "",
            "%d dirs" % ws["dirs"] if "dirs" in ws else "",
            "%d sites" % ws["sites"] if "sites" in ws else "",
            "%.1f MB" % (ws["bytes"] / 1e6) if "bytes" in ws else "") if s)
        if shape == "system":
            first = [r for t in tools for r in steprows(t, "backup") if r["files"]]
            desc = "a copy of this machine's /usr/share and /etc" + (
                ", %s files, %.1f MB" % (first[0]["files"], float(first[0]["bytes"]) / 1e6) if first else "")
        if shape == "dump":
            desc = "day1.sql %.1f MB, day2.sql %.1f MB, %s rows, %.2f %% changed on day 2" % (
                ws.get("day1_bytes", 0) / 1e6, ws.get("day2_bytes", 0) / 1e6, ws.get("rows"), 100 * ws.get("changed_fraction", 0))
        out.append("")
        out.append("### %s (%s)" % (shape, desc))
        out.append("")
        # limits line
        parts = []
        for name, kind in (("read", "secs"), ("stat", "secs"), ("compress", "secs"), ("write", "secs")):
            v = value("limit", name, kind)
            if v is None:
                continue
            extra = ""
            if name == "read":
                extra = " (%s MB/s)" % fmt(value("limit", "read", "mbps"), "mbps")
            if name == "compress":
                cs = value("limit", "compressed_size", "bytes")
                extra = " → %s MB" % fmt(cs, "bytes") if cs else ""
            parts.append("%s %s s%s" % ({"compress": "zstd -3 -T2"}.get(name, name), fmt(v, "secs"), extra))
        if parts:
            out.append("Limits (median): " + " · ".join(parts))
            out.append("")
        hdr = ["", "limit"] + tools
        others = [t for t in tools if t != "restic"]
        if "restic" in tools:
            hdr += ["%s ÷ restic" % t for t in others]
        hdr += ["%s ÷ limit" % t for t in tools]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        sj = summary["shapes"][shape] = {"rows": {}, "runs": {}}
        for label, step, kind, lstep in ROWS[shape]:
            if not any(steprows(t, s) for t in tools for s in (step if isinstance(step, tuple) else (step,))):
                continue
            lv = limit_value(lstep, kind, step)
            vals = {t: value(t, step, kind) for t in tools}
            cells = [label, fmt(lv, kind) if lv is not None else ""]
            for t in tools:
                nf = failed(t, step)
                # A step the tool does not have (arc-only rows) is not a failure.
                ran = any(steprows(t, s) for s in (step if isinstance(step, tuple) else (step,)))
                c = fmt(vals[t], kind) if vals[t] is not None else ("FAIL" if ran else "–")
                if nf and vals[t] is not None:
                    c += " (%d failed)" % nf
                cells.append(c)
            cmp_kind = kind in ("secs", "bytes", "rss")
            if "restic" in tools:
                cells += [ratio(vals[t], vals["restic"]) if cmp_kind else "" for t in others]
            cells += [ratio(vals[t], lv) if (cmp_kind and lv is not None) else "" for t in tools]
            out.append("| " + " | ".join(cells) + " |")
            sj["rows"][label] = {"limit": lv, **vals}
        bad = [(t, r["run"], r["status"]) for t in tools for r in steprows(t, "verify") if r["status"] != "ok"]
        for t, run, st in bad:
            out.append("")
            out.append("**restore check failed**: %s run %s: %s" % (t, run, st))
        ok = sum(1 for t in tools for r in steprows(t, "verify") if r["status"] == "ok")
        if ok or bad:
            out.append("")
            out.append("Restores checked (names, sizes, mtimes%s): %d ok, %d failed."
                       % (", contents" if shape == "dump" else "", ok, len(bad)))
        for tool, steps in d.items():
            sj["runs"][tool] = {s: [{k: r[k] for k in ("run", "seconds", "max_rss_kb", "bytes", "files", "status")}
                                    for r in rs] for s, rs in steps.items()}
    text = "\n".join(out) + "\n"
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
