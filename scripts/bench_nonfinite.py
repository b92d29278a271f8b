"""What the non-finite check costs per train step (train.nonfinite, jaxgan/nonfinite.py).

  python scripts/bench_nonfinite.py [--config configs/jsb_musegan.py] [--reps 5] [--steps 10]
                                    [--override KEY=VALUE ...]

Variants, each compiled once and then run interleaved (A, B, C, A, B, C, ...) on the same
device-resident batch, so that background load hits all of them alike:

- `unchecked`: the engine's own step (`engine.step`), as before the check existed.
- `checked: stop / rollback` (what `train` runs by default): the step wrapped by
  `nonfinite.Guard`, which tests every metric and every floating leaf of the new state and
  updates the carried health record.
- `checked: skip`: the same plus the `jnp.where` over the state that drops a bad update.

Each run dispatches --steps steps and waits for the last one; wall time and this process's CPU
time (all threads; steadier than wall time on a loaded machine) per step. Output: Markdown on
stdout, progress on stderr. Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _bench_util as bu  # also puts this checkout first on sys.path


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/jsb_musegan.py")
  ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--steps", type=int, default=10)
  args = ap.parse_args()

  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxgan import config as config_lib, engines, nonfinite, profiling, sharding

  config = config_lib.load_config(args.config, [o.split("=", 1) for o in args.override])
  tc, lc = config.train, config.loss
  mesh = sharding.make_mesh(tc.mesh_data, tc.mesh_fsdp)
  engine = engines.make_engine(config, mesh)
  start = profiling.steady_step(config)
  rng = np.random.default_rng(0)
  shape = (lc.n_critic, tc.global_batch) + config_lib.data_shape(config)
  batch = {"pianoroll": jnp.asarray((rng.random(shape) < 0.05).astype(np.uint8)),
           "style": jnp.zeros(shape[:2], jnp.int32)}
  replicated = sharding.replicated(mesh)

  def checked(mode: str):
    return engine.jit(
        nonfinite.Guard(engine.train_step, mode),
        in_shardings=(engine.state_sharding, sharding.batch(mesh, leading=1), replicated),
        out_shardings=(engine.state_sharding, replicated, replicated), donate_argnums=(0, 2))

  variants = [("unchecked (engine.step)", engine.step, False),
              ("checked: stop / rollback (train's default)", checked("stop"), True),
              ("checked: skip", checked("skip"), True)]
  runs: list[dict[str, Any]] = []
  for name, fn, guarded in variants:
    bu.log(f"compiling {name} ...")
    state = engine.init(jax.random.PRNGKey(0))
    state = dict(state, step=jnp.asarray(start, state["step"].dtype))
    health = jax.device_put(nonfinite.new_health(), replicated) if guarded else None
    args_ = (state, batch, health) if guarded else (state, batch)
    t0 = time.perf_counter()
    compiled = fn.lower(*args_).compile()
    runs.append(dict(name=name, fn=compiled, state=state, health=health, guarded=guarded,
                     compile_s=time.perf_counter() - t0, ms=[], cpu_ms=[]))

  def advance(run: dict[str, Any]) -> Any:
    if run["guarded"]:
      run["state"], metrics, run["health"] = run["fn"](run["state"], batch, run["health"])
    else:
      run["state"], metrics = run["fn"](run["state"], batch)
    return metrics

  for run in runs:   # warm-up
    for _ in range(2):
      advance(run)
    jax.block_until_ready(run["state"])
  for rep in range(args.reps):
    bu.log(f"rep {rep + 1}/{args.reps}")
    for run in runs:
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(args.steps):
        metrics = advance(run)
      jax.block_until_ready((run["state"], metrics))
      run["ms"].append((time.perf_counter() - t0) / args.steps * 1e3)
      run["cpu_ms"].append((time.process_time() - c0) / args.steps * 1e3)

  base = statistics.median(runs[0]["ms"])
  cpu_base = statistics.median(runs[0]["cpu_ms"])
  rows = []
  for run in runs:
    med, cpu = statistics.median(run["ms"]), statistics.median(run["cpu_ms"])
    rows.append([run["name"], f"{run['compile_s']:.1f}", f"{med:.2f}",
                 f"{min(run['ms']):.2f}-{max(run['ms']):.2f}", f"{med / base:.3f}x",
                 f"{cpu:.2f}", f"{cpu / cpu_base:.3f}x"])
  extra = [f"config: {args.config} (global batch {tc.global_batch}, n_critic {lc.n_critic})"]
  print("\n".join(bu.header("The non-finite check per train step", extra)))
  print()
  print("\n".join(bu.table(
      ["variant", "compile (s)", "ms per step, median", "min-max", "vs unchecked",
       "CPU ms per step, median", "vs unchecked"], rows,
      [False, True, True, True, True, True, True])))
  print(f"\n{args.reps} interleaved runs x {args.steps} steps per variant; each run waits for "
        "its last step.")


if __name__ == "__main__":
  main()
