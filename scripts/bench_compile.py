"""Compile time of each shipped config's train step, in fresh processes.

  python scripts/bench_compile.py [--configs a.py,b.py] [--reps 3] [--against-flags FLAGS]

For each config a new Python process builds the engine and times, for the train step on a
batch of the config's shape: tracing (Python, JAX), lowering to StableHLO, and XLA's compile,
wall time and the process's CPU time for the compile (XLA compiles kernels on every core). A
fresh process per measurement, so that no in-memory cache helps; the persistent compilation
cache is not enabled. With `--against-flags`, every run is repeated with XLA_FLAGS set to
FLAGS, alternating the two, for an A/B (e.g. `--against-flags=--xla_backend_optimization_level=3`
for XLA's default LLVM level, which an explicit flag makes the engine keep).

Output: Markdown on stdout, progress on stderr. Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

import _bench_util as bu  # also puts this checkout first on sys.path

# The measurement each child process runs: argv[1] is the config path.
CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
from jaxgan import config as config_lib, gan, sharding

def cpu():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime

config = config_lib.load_config(sys.argv[1], [])
engine = gan.Engine(config, sharding.make_mesh(-1, 1))
state = jax.eval_shape(engine.init, jax.random.PRNGKey(0))
shape = (config.loss.n_critic, config.train.global_batch) + config_lib.data_shape(config)
batch = {"pianoroll": jax.ShapeDtypeStruct(shape, jnp.uint8),
         "style": jax.ShapeDtypeStruct(shape[:2], jnp.int32)}
t0 = time.perf_counter()
traced = engine.step.trace(state, batch)
t1 = time.perf_counter()
lowered = traced.lower()
t2, c2 = time.perf_counter(), cpu()
lowered.compile()
t3, c3 = time.perf_counter(), cpu()
print(json.dumps({"trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2, "compile_cpu": c3 - c2,
                  "options": engine.compiler_options}))
"""


def measure(config: str, xla_flags: str | None) -> dict:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  if xla_flags:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run([sys.executable, "-c", CHILD, config], env=env, cwd=bu.REPO,
                       capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{config}: child failed:\n{out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--configs", default="",
                  help="comma-separated config files (default: every configs/*.py)")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--against-flags", default=None, metavar="FLAGS",
                  help="also time every config with XLA_FLAGS=FLAGS, alternating")
  args = ap.parse_args()
  configs = ([c for c in args.configs.split(",") if c] or
             sorted(os.path.relpath(p, bu.REPO)
                    for p in glob.glob(os.path.join(bu.REPO, "configs", "*.py"))))
  variants = [None] + ([args.against_flags] if args.against_flags is not None else [])

  rows = []
  for config in configs:
    runs: dict[str | None, list[dict]] = {v: [] for v in variants}
    for rep in range(args.reps):
      for v in variants:
        bu.log(f"{config} rep {rep + 1}/{args.reps}" + (f" XLA_FLAGS={v}" if v else ""))
        runs[v].append(measure(config, v))
    for v in variants:
      r = runs[v]
      med = lambda key, r=r: statistics.median(x[key] for x in r)  # noqa: E731
      totals = [x["trace"] + x["lower"] + x["compile"] for x in r]
      rows.append([
          config, f"XLA_FLAGS={v}" if v else "engine defaults", json.dumps(r[0]["options"]),
          f"{med('trace'):.1f}", f"{med('lower'):.1f}", f"{med('compile'):.1f}",
          f"{med('compile_cpu'):.1f}", f"{statistics.median(totals):.1f}",
          f"{min(totals):.1f}-{max(totals):.1f}"])

  print("\n".join(bu.header("Train-step compile time per config (fresh processes)")))
  print()
  print("\n".join(bu.table(
      ["config", "XLA flags", "engine compiler options", "trace (s)", "lower (s)",
       "XLA compile (s)", "XLA compile, CPU (s)", "total (s), median", "total min-max"],
      rows, [False, False, False, True, True, True, True, True, True])))
  print(f"\nMedians over {args.reps} fresh processes per row"
        + (", the two settings alternating." if len(variants) > 1 else "."))


if __name__ == "__main__":
  main()
