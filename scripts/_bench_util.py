"""Shared pieces of the benchmark scripts: the report header, number formatting, summaries.

Kept free of torch (unlike bench_vs_torch.py) so that the jaxgan-only benchmarks need only
jaxgan's own dependencies.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
  sys.path.insert(0, REPO)   # jaxgan from this checkout, not an installed copy


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def command_line() -> str:
  script = os.path.relpath(sys.argv[0])
  if script.startswith(".."):
    script = os.path.basename(sys.argv[0])
  return shlex.join(["python", script, *sys.argv[1:]])


def header(title: str, extra: Sequence[str] = ()) -> list[str]:
  """Markdown: a title, then machine, date, versions and the command line as a bullet list."""
  import jax  # pylint: disable=import-outside-toplevel
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [
      f"## {title}",
      "",
      f"- machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable), "
      f"load average {os.getloadavg()[0]:.2f} at start",
      f"- jax devices: {len(devices)} x {', '.join(kinds)} ({jax.default_backend()})",
      f"- date: {now}",
      f"- versions: Python {platform.python_version()}, jax {jax.__version__}",
      f"- command: `{command_line()}`",
  ]
  return lines + [f"- {e}" for e in extra]


def fmt(x: float) -> str:
  """Three significant figures, thousands separated from 100 up."""
  if x >= 100:
    return f"{x:,.0f}"
  if x >= 10:
    return f"{x:.1f}"
  return f"{x:.3g}" if x >= 0.01 else f"{x:.2e}"


def spread(values: Sequence[float]) -> tuple[str, str]:
  """(median, min-max) of a set of rates as table cells."""
  if not values:
    return "n/a", ""
  med = statistics.median(values)
  if len(values) == 1:
    return fmt(med), "-"
  return fmt(med), f"{fmt(min(values))}-{fmt(max(values))}"


def table(columns: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[bool]) -> list[str]:
  """A Markdown table; `right` says which columns are right-aligned (numbers)."""
  out = ["| " + " | ".join(columns) + " |",
         "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
  out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return out


def log(msg: str) -> None:
  """Progress on stderr, so that stdout is only the report."""
  print(msg, file=sys.stderr, flush=True)
