"""Training speed of jaxgan configs on real pipeline batches: steps/s, examples/s, input wait.

  python scripts/bench_train.py [--configs a.py,b.py] [--reps 5] [--run-seconds 10 | --steps N]
                                [--override KEY=VALUE] [--data-dir DIR]

For each config: build the engine, initialise the state, open `pipeline.train_iterator` (the
jsb config reads the built jsb_chorales data set: `prepare` runs first and reuses a matching
build), compile the step on the first batch (timed on its own), run --warmup steps, then
--reps runs of --steps steps (by default as many as take about --run-seconds, from the pace
of the warm-up). Each step takes its batch from the iterator (the time spent
there is the input wait) and is waited for before the next one starts, as in
`jaxgan profile`, so that the wait counts only input time the step did not hide. One step
is n_critic D updates and one G update; examples/s counts n_critic x global_batch real
examples per step. The training loop itself does not wait after each step, so its rate can
be a little higher where dispatch overhead matters.

Output: Markdown on stdout (progress on stderr). Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

import _bench_util as bu  # also puts this checkout first on sys.path

CONFIGS = "configs/musegan_tutorial.py,configs/jsb_musegan.py"
# Data sets that `prepare` can build with no input from the user.
BUILDABLE = ("jsb_chorales", "music21_styles")


def ensure_data(config, build_max_songs: int | None, built: dict[str, str]) -> None:
  """Builds (or reuses) the config's data set once per (name, data_dir)."""
  from jaxgan.data.prepare import prepare  # pylint: disable=import-outside-toplevel
  name, data_dir = config.data.name, config.data.data_dir or None
  if name not in BUILDABLE or (name, data_dir) in built:
    return
  bu.log(f"preparing {name} (reused when already built) ...")
  s = prepare(name, data_dir=data_dir, max_songs=build_max_songs, progress=False)
  how = "reused" if s["reused"] else f"built in {s['seconds']:.0f} s"
  built[(name, data_dir)] = (f"{name}: {s['songs']} songs ({how}, "
                             f"{s['splits']['train']['songs']} in train)")


def bench_config(path: str, overrides: list[tuple[str, str]], args) -> dict[str, Any]:
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxgan import config as config_lib, gan, sharding
  from jaxgan.data import pipeline

  config = config_lib.load_config(path, overrides)
  ensure_data(config, args.build_max_songs, args.built)
  tc = config.train
  mesh = sharding.make_mesh(tc.mesh_data, tc.mesh_fsdp)
  pipeline.check_batch(config, mesh, jax.process_count())
  bu.log(f"{path}: init ...")
  t0 = time.perf_counter()
  engine = gan.Engine(config, mesh)
  state = jax.block_until_ready(engine.init(jax.random.PRNGKey(tc.seed)))
  init_s = time.perf_counter() - t0
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  g_params, d_params = count(state["g"]), count(state["d"])

  batches = pipeline.train_iterator(config, mesh)
  first = next(batches)
  bu.log(f"{path}: compiling the step ...")
  t0 = time.perf_counter()
  step = engine.step.lower(state, first).compile()
  compile_s = time.perf_counter() - t0

  state, metrics = jax.block_until_ready(step(state, first))
  t0 = time.perf_counter()
  for _ in range(args.warmup):
    state, metrics = step(state, next(batches))
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / max(args.warmup, 1)
  # Runs of about --run-seconds each unless --steps fixes them: one setting fits fast and slow
  # configs alike.
  steps = args.steps or max(3, round(args.run_seconds / max(step_s, 1e-6)))

  totals, waits = [], []
  for rep in range(args.reps):
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
      t0 = time.perf_counter()
      batch = next(batches)
      wait += time.perf_counter() - t0
      state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
    totals.append(time.perf_counter() - start)
    waits.append(wait)
    bu.log(f"  rep {rep + 1}/{args.reps}: {steps / totals[-1]:.2f} steps/s, "
           f"input wait {100 * wait / totals[-1]:.1f} %")
  batches.close()   # stops the pipeline's threads before the next config runs

  n_critic = int(jax.device_get(metrics["n_critic"]))
  if n_critic != config.loss.n_critic:
    bu.log(f"  note: the last step ran {n_critic} D updates, not loss.n_critic")
  return {
      "config": path, "data": config.data.name, "batch": int(tc.global_batch),
      "n_critic": int(config.loss.n_critic), "shape": engine.data_shape,
      "arch": config.model.get("arch", ""), "g_params": g_params, "d_params": d_params,
      "init_s": init_s, "compile_s": compile_s, "steps": steps, "totals": totals,
      "waits": waits,
  }


def rows_for(results: list[dict[str, Any]]) -> list[list[str]]:
  rows = []
  for r in results:
    if "error" in r:
      rows.append([f"`{r['config']}`", "", "", "", f"n/a ({r['error']})"] + [""] * 7)
      continue
    per_step, steps = r["batch"] * r["n_critic"], r["steps"]
    rates = [steps / t for t in r["totals"]]
    compute = [steps / (t - w) for t, w in zip(r["totals"], r["waits"])]
    wait = [w / t for t, w in zip(r["totals"], r["waits"])]
    sm, sr = bu.spread(rates)
    em, er = bu.spread([x * per_step for x in rates])
    cm, _ = bu.spread(compute)
    shape = "x".join(str(d) for d in r["shape"])
    rows.append([
        f"`{r['config']}`", f"{r['data']}, {shape}", f"{r['n_critic']} x {r['batch']}",
        f"{r['g_params']:,} / {r['d_params']:,}", f"{r['compile_s']:.1f}", sm, sr, em, er,
        cm, f"{100 * statistics.median(wait):.1f} % ({100 * min(wait):.1f}-"
            f"{100 * max(wait):.1f})",
        f"{len(rates)} x {steps}"])
  return rows


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default=CONFIGS,
                 help="comma-separated config files, path[:arg] (default %(default)s)")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every config, e.g. train.global_batch=64 "
                      "(repeatable)")
  p.add_argument("--reps", type=int, default=5, help="timed runs per config (>= 3 to report)")
  p.add_argument("--steps", type=int, default=None,
                 help="steps per timed run (default: as many as fill --run-seconds)")
  p.add_argument("--run-seconds", type=float, default=10.0,
                 help="target length of a timed run when --steps is not given")
  p.add_argument("--warmup", type=int, default=5,
                 help="steps after compiling, before timing (also size the runs)")
  p.add_argument("--data-dir", default="",
                 help="where data sets are (or get) built (default $JAXGAN_DATA_DIR or "
                      "~/tensorflow_datasets)")
  p.add_argument("--build-max-songs", type=int, default=None,
                 help="build the data set from at most N files: quick trials only; a stored "
                      "build made otherwise is rebuilt, so use it with --data-dir")
  args = p.parse_args(argv)
  overrides = []
  for o in args.override:
    if "=" not in o:
      p.error(f"--override {o!r}: expected KEY=VALUE")
    overrides.append(tuple(o.split("=", 1)))
  if args.data_dir:
    overrides.insert(0, ("data.data_dir", args.data_dir))
  args.built = {}

  os.chdir(bu.REPO)   # config paths are relative to the checkout
  import jax  # pylint: disable=import-outside-toplevel
  results = []
  for path in [c.strip() for c in args.configs.split(",") if c.strip()]:
    try:
      results.append(bench_config(path, overrides, args))
    except Exception as e:  # pylint: disable=broad-except
      # One config that cannot run (say, an unbuilt data set) leaves the others' rows.
      if os.environ.get("BENCH_DEBUG"):
        raise
      reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
      bu.log(f"  {path}: n/a: {reason}")
      results.append({"config": path, "error": reason})

  extra = list(args.built.values())
  if jax.config.jax_compilation_cache_dir:
    extra.append("a persistent compilation cache is on: compile times may be cache hits")
  if args.reps < 3:
    extra.append(f"only {args.reps} run(s): a smoke run, not a result")
  columns = ["config", "data, shape (bars x steps x pitches x tracks)",
             "examples per step (n_critic x batch)", "G / D params", "compile (s)",
             "steps/s median", "steps/s min-max", "examples/s median", "examples/s min-max",
             "steps/s without input wait (median)", "input wait, median (min-max)",
             "runs x steps"]
  lines = bu.header("jaxgan training speed on pipeline batches", extra) + [""]
  lines += bu.table(columns, rows_for(results), [False, False] + [True] * 10)
  lines += [
      "",
      f"Each run: N steps (last column) after {args.warmup} warm-up steps, each step fed by "
      "`pipeline.train_iterator` and waited for; median and min-max over the runs. Compile "
      "is `engine.step.lower(...).compile()` on the first batch. Input wait = time blocked "
      "on the iterator / wall time of the run.",
  ]
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
