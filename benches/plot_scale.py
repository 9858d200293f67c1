"""Draws scale.png from the scale bench's scale.json: the commit rate of every tenth of the import
against etcd's write rate in the same run, and the status reads' p50/p99 by stored calls.

Usage: python plot_scale.py <dir with scale.json>   (the bench runs it with its venv)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    data = json.loads((out / "scale.json").read_text())
    calls = data["calls"]
    tenths = data["tenths_commits_per_s"]
    etcd = [e for e in data["etcd_writes_per_s"] if e is not None]

    fig, (rate, reads) = plt.subplots(1, 2, figsize=(12, 4.5))
    stored = [calls * (k + 1) / 10 / 1e6 for k in range(10)]
    rate.bar(stored, tenths, width=calls / 10 / 1e6 * 0.8, color="#3b7dd8", label="callvault commits/s")
    for i, e in enumerate(etcd):
        rate.axhline(e, color="#d8573b", linestyle="--" if i else "-",
                     label=f"etcd 3 members, writes/s ({'after' if i else 'before'})")
        rate.axhline(3 * e, color="#999999", linestyle=":" if i else "-.", linewidth=1,
                     label=f"3× etcd ({'after' if i else 'before'})")
    rate.set_xlabel("calls stored at the end of the tenth (millions)")
    rate.set_ylabel("committed calls per second")
    rate.set_title(f"Import of {calls:,} calls into 3 nodes")
    rate.legend(fontsize=8, loc="lower left")

    points = data["reads"]
    xs = [p["stored"] for p in points]
    for name, label, color in [("status", "JurisdictionStatus", "#3b7dd8"),
                               ("call", "CallStatus", "#2a9d5c"),
                               ("list", "ListCalls first page", "#d8573b")]:
        reads.plot(xs, [p[f"{name}_p50_ms"] for p in points], "o-", color=color, label=f"{label} p50")
        reads.plot(xs, [p[f"{name}_p99_ms"] for p in points], "s--", color=color, label=f"{label} p99")
    reads.set_xscale("log")
    reads.set_xlabel("calls stored")
    reads.set_ylabel("latency (ms)")
    reads.set_ylim(bottom=0)
    reads.set_title("Status reads by store size")
    reads.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)


if __name__ == "__main__":
    main()
