"""The results of a run: the table, the ratios the project tracks, latest.md and latest.png."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The ratios, each from two rows of the same run: (label, row, figure, base row, base figure).
RATIOS = [
    ("secured CPU/req ÷ nginx plain CPU/req", "fastgw", "cpu_us", "nginx", "cpu_us"),
    ("secured user ÷ nginx user", "fastgw", "user_us", "nginx", "user_us"),
    ("`auth: none` CPU/req ÷ nginx CPU/req", "fastgw-none", "cpu_us", "nginx", "cpu_us"),
    ("secured req/s ÷ HAProxy-JWT req/s", "fastgw", "rps", "haproxy", "rps"),
    ("secured p99 ÷ nginx p99", "fastgw", "p99", "nginx", "p99"),
    ("fresh-token req/s ÷ HAProxy fresh-token req/s", "fastgw-fresh", "rps", "haproxy-fresh",
     "rps"),
    ("Redis-limited CPU/req ÷ local-limited CPU/req", "fastgw-redis", "cpu_us", "fastgw",
     "cpu_us"),
]

METHOD = [
    "CPU/req: utime + stime of all the contender's processes over the wrk run, per request "
    "wrk completed. User µs: CPU 1's user + nice time (/proc/stat) over the run, per request. "
    "Forwarded/completed: the upstream's stub_status request count over the run, per request "
    "wrk completed.",
    "",
    "Before any load every contender answered 200 (with the upstream's body) to a good token, "
    "401 to none, a bad signature, an expired token, a wrong aud, a wrong iss and alg none, "
    "403 to a token without the scope (the no-auth contenders: the 200 only).",
    "",
    "HAProxy checks the claims in ACLs on jwt_header_query / jwt_payload_query: alg RS256, "
    "iss, aud (as a string: 2.6's JSON query yields nothing for an array), exp against date() "
    "(no leeway), scope; a stick table keyed by sub tracks http_req_rate(60s).",
]

# Short names for the chart.
SHORT = {
    "upstream": "upstream (ceiling)",
    "nginx": "nginx proxy_pass",
    "haproxy": "HAProxy JWT",
    "haproxy-fresh": "HAProxy JWT, fresh tokens",
    "fastgw-none": "fastgw auth: none",
    "fastgw": "fastgw secured",
    "fastgw-redis": "fastgw secured, Redis limit",
    "fastgw-fresh": "fastgw secured, fresh tokens",
}


@dataclass
class Figure:
    """The medians of one row over the rounds, and what is wrong with it."""

    key: str
    label: str
    rps: float
    p50: float
    p99: float
    cpu_us: float | None
    user_us: float | None
    forwarded: float
    flags: list[str] = field(default_factory=list)
    redis_us: float | None = None
    rounds: list[tuple[float, float | None]] = field(default_factory=list)
    socket_errors: int = 0


@dataclass
class IdleResult:
    kind: str
    count: int
    before: int  # bytes of RSS
    after: int
    established: int
    closed: int
    active: float | None  # fastgw_active_connections
    seconds: float

    @property
    def growth_mib(self) -> float:
        return (self.after - self.before) / 2**20

    def problems(self) -> list[str]:
        found = []
        if self.established < self.count:
            found.append(f"{self.kind}: only {self.established:,} of {self.count:,} idle "
                         "connections established")
        if self.closed:
            found.append(f"{self.kind}: closed {self.closed:,} idle connections")
        if self.active is not None and self.active < self.count:
            found.append(f"{self.kind}: fastgw_active_connections {self.active:.0f} < "
                         f"{self.count:,}")
        return found


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\N{EN DASH}"
    return f"{value:,.{digits}f}"


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"? ({exc})"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def machine(tools: dict[str, str]) -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fastgw = _first_line([sys.executable, "-m", "fastgw", "version"])
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "nginx": _first_line([tools["nginx"], "-v"]),
        "haproxy": _first_line([tools["haproxy"], "-v"]),
        "wrk": _first_line([tools["wrk"], "-v"]),
        "redis": _first_line([tools["redis-server"], "--version"]),
        "fastgw": fastgw + ("" if "compiled core" in fastgw else "  (NOT the compiled core)"),
    }


class Report:
    def __init__(self, settings, figures: list[Figure], idle: list[IdleResult],
                 tools: dict[str, str], seconds: float) -> None:
        self.settings = settings
        self.figures = figures
        self.by_key = {figure.key: figure for figure in figures}
        self.idle = idle
        self.machine = machine(tools)
        self.seconds = seconds
        self.when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.command = "python -m bench " + " ".join(sys.argv[1:])

    # -- text ---------------------------------------------------------------------

    def table(self) -> list[str]:
        header = ["contender (one worker)", "req/s", "p50 ms", "p99 ms", "CPU/req µs",
                  "user µs", "forwarded/completed", "check"]
        lines = [header]
        for f in self.figures:
            lines.append([f.label, _fmt(f.rps, 0), _fmt(f.p50, 2), _fmt(f.p99, 2),
                          _fmt(f.cpu_us, 1), _fmt(f.user_us, 1), f"{f.forwarded:.3f}",
                          "; ".join(f.flags) or "ok"])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for number, line in enumerate(lines):
            cells = [cell.ljust(widths[i]) if i in (0, 7) else cell.rjust(widths[i])
                     for i, cell in enumerate(line)]
            out.append("| " + " | ".join(cells) + " |")
            if number == 0:
                out.append("|" + "|".join("-" * (w + 1) + ("-" if i in (0, 7) else ":")
                                          for i, w in enumerate(widths)) + "|")
        return out

    def idle_lines(self) -> list[str]:
        if not self.idle:
            return []
        parts = [f"{r.kind} {r.growth_mib:.1f} MiB ({r.before / 2**20:.1f} → "
                 f"{r.after / 2**20:.1f} MiB, {(r.after - r.before) / r.count / 1024:.1f} KiB "
                 f"per connection)" for r in self.idle]
        count = self.idle[0].count
        checks = []
        for r in self.idle:
            seen = f"{r.established:,} ESTABLISHED in /proc/net/tcp"
            if r.active is not None:
                seen += f", fastgw_active_connections {r.active:,.0f}"
            checks.append(f"{r.kind}: {seen}, {r.closed} closed, opened in {r.seconds:.1f} s")
        return [f"{count:,} idle keep-alive connections, RSS growth: " + ", ".join(parts),
                "(" + "; ".join(checks) + ")"]

    def ratios(self) -> list[tuple[str, float | None]]:
        found = []
        for label, key, name, base_key, base_name in RATIOS:
            if key in self.by_key and base_key in self.by_key:
                value = getattr(self.by_key[key], name)
                base = getattr(self.by_key[base_key], base_name)
                found.append((label, value / base if value is not None and base else None))
        idle = {r.kind: r for r in self.idle}
        if "fastgw" in idle:
            found.append((f"fastgw idle RSS growth for {idle['fastgw'].count:,} connections, MiB",
                          idle["fastgw"].growth_mib))
        return found

    def ratio_lines(self) -> list[str]:
        lines = []
        for label, value in self.ratios():
            digits = 1 if label.startswith("fastgw idle") else 2
            lines.append(f"- {label}: {_fmt(value, digits)}")
        return lines

    def notes(self) -> list[str]:
        notes = []
        redis = self.by_key.get("fastgw-redis")
        if redis is not None and redis.redis_us is not None:
            notes.append(f"redis-server spent {redis.redis_us:.1f} µs of CPU per request "
                         "(not in the row's CPU/req)")
        for f in self.figures:
            if f.socket_errors:
                notes.append(f"{SHORT.get(f.key, f.key)}: {f.socket_errors:,} socket errors "
                             "reported by wrk")
        if not self.settings.pinned:
            notes.append(f"UNPINNED ({self.settings.pin_note}): 'user µs' is the user time of "
                         "all CPUs per request, wrk and the upstream included")
        return notes

    def failures(self) -> list[str]:
        failed = [f"{f.label}: {', '.join(f.flags)}" for f in self.figures if f.flags]
        for r in self.idle:
            failed += r.problems()
        return failed

    def print(self) -> None:
        print()
        print(self.settings.describe())
        print()
        print("\n".join(self.table()))
        for line in self.idle_lines():
            print(line)
        if self.ratio_lines():
            print("\nratios (this run):")
            print("\n".join(self.ratio_lines()))
        for note in self.notes():
            print(f"note: {note}")
        print(f"\nthe run took {self.seconds:.0f} s")

    def markdown(self) -> str:
        lines = [
            "# fastgw benchmark: latest run",
            "",
            f"`{self.command.strip()}` on {self.when}, {self.seconds:.0f} s.",
            "",
        ]
        if self.settings.smoke:
            lines += ["**Smoke run: every row and check exercised, figures meaningless.**", ""]
        lines += self.table()
        lines += ["", *self.idle_lines()]
        if self.ratio_lines():
            lines += ["", "## Ratios", "", *self.ratio_lines()]
        if self.notes():
            lines += ["", "## Notes", "", *(f"- {note}" for note in self.notes())]
        lines += ["", "## Per round", "", "req/s (CPU/req µs) of each round, in order:", ""]
        for f in self.figures:
            rounds = ", ".join(f"{rps:,.0f} ({_fmt(cpu, 1)})" for rps, cpu in f.rounds)
            lines.append(f"- {SHORT.get(f.key, f.key)}: {rounds}")
        lines += ["", "## Settings", "", self.settings.describe(), "", *METHOD, "", "## Machine",
                  ""]
        lines += [f"- {name}: {value}" for name, value in self.machine.items()]
        return "\n".join(lines) + "\n"

    # -- files --------------------------------------------------------------------

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / "latest.md"
        md.write_text(self.markdown())
        written = [md]
        if self.figures:
            png = directory / "latest.png"
            try:
                self.chart(png)
            except ImportError:
                print("note: matplotlib is not installed (pip install matplotlib): no latest.png")
            else:
                written.append(png)
        return written

    def chart(self, path: Path) -> None:
        import matplotlib  # only a run that writes files needs it

        matplotlib.use("Agg")
        from matplotlib import pyplot

        figures = self.figures
        names = [SHORT.get(f.key, f.key) for f in figures]
        colors = ["#c0392b" if f.flags else "#95a5a6" if f.key in ("upstream", "nginx")
                  else "#e67e22" if f.key.startswith("haproxy") else "#2e86c1" for f in figures]
        fig, (cpu_axis, rps_axis) = pyplot.subplots(1, 2, figsize=(13, 0.55 * len(figures) + 2),
                                                    sharey=True)
        positions = range(len(figures))
        cpu = [f.cpu_us or 0 for f in figures]
        rps = [f.rps for f in figures]
        cpu_axis.barh(positions, cpu, color=colors)
        rps_axis.barh(positions, rps, color=colors)
        cpu_axis.set_yticks(list(positions), names)
        cpu_axis.invert_yaxis()
        cpu_axis.set_xlabel("CPU time per request of the contender, µs (lower is better)")
        rps_axis.set_xlabel("requests per second (higher is better)")
        for axis, values, digits in ((cpu_axis, cpu, 1), (rps_axis, rps, 0)):
            for position, value in zip(positions, values, strict=True):
                if value:
                    axis.text(value, position, f" {value:,.{digits}f}", va="center", fontsize=8)
                else:  # the ceiling: wrk straight to the upstream, no contender to measure
                    axis.text(max(values) / 2, position, "\N{EN DASH} (not a contender)",
                              va="center", ha="center", fontsize=8)
            axis.margins(x=0.18)
            axis.grid(axis="x", alpha=0.3)
        nginx = self.by_key.get("nginx")
        if nginx is not None:
            if nginx.cpu_us:
                cpu_axis.axvline(nginx.cpu_us, color="black", linestyle="--", linewidth=1,
                                 label="nginx proxy_pass")
                cpu_axis.legend(loc="upper right", fontsize=8)
            rps_axis.axvline(nginx.rps, color="black", linestyle="--", linewidth=1,
                             label="nginx proxy_pass")
            rps_axis.legend(loc="lower right", fontsize=8)
        title = (f"fastgw against nginx and HAProxy, one worker each, {self.when}, "
                 f"{self.machine['CPU']} ({self.machine['cores']} cores)")
        if self.settings.smoke:
            title += "\nSMOKE RUN: the figures mean nothing"
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        pyplot.close(fig)
