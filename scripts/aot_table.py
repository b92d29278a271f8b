"""HBM per device, FLOPs and XLA's step-time estimate of configs on TPU topologies, without TPUs.

  python scripts/aot_table.py [--configs a.py,b.py] [--topologies v5e:2x2,v4:2x2x1]
                              [--slices 1] [--override key=value ...] [--timeout 1800]
                              [--json out.json]

Runs `jaxgan compile` for every config x topology, each in a fresh process (a crash of
libtpu's compiler then costs one row, not the table), and prints one Markdown table: per
device, the train step's HBM (arguments + temporaries + outputs + code) against the chip's,
the EMA sampler's, FLOPs per step in all, XLA's estimated step time and the examples/s it
implies. A pair that cannot run there (batch,
mesh, memory, a compiler crash) gets its reason instead. Needs libtpu (pip install -e '.[tpu]').

Output: Markdown on stdout, progress on stderr. Estimates of XLA's cost model, not timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # the TPU devices are compile-only

import _bench_util as bu  # noqa: E402  (also puts this checkout first on sys.path)

CONFIGS = ("musegan_tutorial.py", "jsb_musegan.py", "musegan_lpd5.py", "jsb_chorale.py")
TOPOLOGIES = ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2", "v5e:4x4")


def compile_pair(path: str, topology: str, slices: int, overrides: list[str],
                 timeout: float | None = None) -> tuple[dict | None, str]:
  """(report, "") from `jaxgan compile --json` in a child process, or (None, the reason)."""
  cmd = [sys.executable, "-m", "jaxgan.cli", "compile", "--config", path, "--topology", topology,
         "--slices", str(slices), "--json", *overrides]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=bu.REPO, check=False,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return None, f"not compiled within {timeout:.0f} s"
  if proc.returncode == 0:
    return json.loads(proc.stdout), ""
  if proc.returncode < 0:
    failed = [ln for ln in proc.stderr.splitlines() if "Check failed" in ln]
    where = f": {failed[0].split('] ', 1)[-1][:160]}" if failed else ""
    return None, f"libtpu's compiler crashed (signal {-proc.returncode}){where}"
  lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("jaxgan compile: ")]
  return None, (lines[-1][len("jaxgan compile: "):] if lines
                else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--configs", default=",".join(CONFIGS), help="files in configs/, or paths")
  ap.add_argument("--topologies", default=",".join(TOPOLOGIES))
  ap.add_argument("--slices", type=int, default=1)
  ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for every config, e.g. train.global_batch=256")
  ap.add_argument("--timeout", type=float, default=1800, help="seconds per compile")
  ap.add_argument("--json", help="also write every report here (after each compile)")
  args = ap.parse_args()
  overrides = [f"--config.{o}" for o in args.override]
  rows, reports = [], []
  for name in args.configs.split(","):
    path = name if os.path.exists(name) else os.path.join(bu.REPO, "configs", name)
    label = os.path.basename(path)
    for topology in args.topologies.split(","):
      bu.log(f"{label} on {topology} ...")
      r, why = compile_pair(path, topology, args.slices, overrides, args.timeout)
      if r is None:
        rows.append([label, topology, "", "", f"refused: {why}", "", "", "", "", ""])
        bu.log(f"  {why}")
        continue
      reports.append(r)
      if args.json:
        with open(args.json, "w") as f:
          json.dump(reports, f, indent=2)
      s, hbm = r["step"], r["hbm_per_device"]
      sampler = r.get("sampler")
      rows.append([
          label, topology, f"{r['devices']} x {r['device_kind']}",
          f"{r['global_batch']} x {r['n_critic']}",
          f"{s['total'] / 2**20:,.1f} MiB ({100 * s['total'] / hbm:.2f} %)",
          f"{sampler['total'] / 2**20:,.1f} MiB @ {sampler['batch']}" if sampler else "-",
          bu.fmt(s["flops"] / 1e9),
          bu.fmt(1e3 * s["est_step_s"]) if s["est_step_s"] else "n/a",
          bu.fmt(s["est_examples_per_s"]) if s["est_examples_per_s"] else "n/a",
          f"{r['compile_s']:.0f}",
      ])
      bu.log(f"  {rows[-1][4]}, {rows[-1][7]} ms")
  libtpu = reports[0]["libtpu"] if reports else "?"
  lines = bu.header("Dry runs on TPU topologies (jaxgan compile)",
                    [f"libtpu {libtpu}; slices: {args.slices}; overrides: "
                     f"{' '.join(args.override) or 'none'}"])
  lines += [""] + bu.table(
      ["config", "topology", "devices", "batch x n_critic", "step HBM per device (of chip)",
       "sampler HBM per device", "GFLOP per step (all devices)", "est. step ms",
       "est. examples/s", "compile s"],
      rows, [False, False, False, False, True, True, True, True, True, True])
  print("\n".join(lines))


if __name__ == "__main__":
  main()
