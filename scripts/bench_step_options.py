"""Two engine choices measured against their alternatives: the fused critic loop and donation.

  python scripts/bench_step_options.py [--config configs/jsb_musegan.py] [--reps 5] [--steps 10]
                                       [--override KEY=VALUE ...]

Variants, each compiled once and then run interleaved (A, B, C, A, B, C, ...) on the same
device-resident batch, so that background load hits all of them alike:

- `fused, donated` (what `train` runs): one executable per step, the n_critic D updates in a
  `fori_loop` inside it, the state's buffers donated to the step's output.
- `fused, not donated`: the same step jitted without `donate_argnums`, so XLA allocates a fresh
  state every step and the old one lives until Python drops it.
- `critic loop in Python`: one jitted D update dispatched n_critic times, then a jitted G update
  (+ EMA), as a training loop without the fused loop would run; n_critic + 1 dispatches per
  step. Configs with `loss.reuse_fake` (the G update reuses the last critic update's fakes)
  have no such split and skip this variant.

Each run dispatches --steps steps and waits for the last one. Output: Markdown on stdout,
progress on stderr. Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import _bench_util as bu  # also puts this checkout first on sys.path


def python_loop_step(engine) -> Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]:
  """A train step that drives the critic loop from Python: n_critic + 1 executables per step.

  Same updates as the fused step without loss.reuse_fake (fresh fakes for every D update and for
  the G update, the same keys), less the step's metrics. It makes n_critic D updates every step:
  the timed steps lie past the critic warm-up and between the periodic long critic phases.
  """
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import optax
  from jaxgan import optim
  from jaxgan.gan import step as step_lib

  lc = engine.config.loss
  critic = engine.jit(engine.critic_update, donate_argnums=(2, 3))

  @engine.jit
  def prologue(state, batch):
    real = jnp.where(batch["pianoroll"] > 0, 1.0, -1.0).astype(jnp.float32)
    rng, d_rng, g_rng = step_lib.step_keys(state["rng"])
    return real, batch["style"].astype(jnp.int32), rng, d_rng, g_rng, engine.slope(state["step"])

  @functools.partial(engine.jit, donate_argnums=0)
  def g_update(state, real0, style0, g_rng, rng, slope):
    _, g_stats, grads = step_lib.generator_grads(engine, state["g"], state["g_stats"],
                                                 state["d"], real0, style0, g_rng, slope)
    updates, g_opt = engine.txs.g.update(grads, state["g_opt"], state["g"])
    g_params = optax.apply_updates(state["g"], updates)
    return dict(state, step=state["step"] + 1, g=g_params, g_stats=g_stats, g_opt=g_opt,
                g_ema=optim.ema_update(state["g_ema"], g_params, engine.config.train.ema_decay),
                rng=rng)

  def step(state, batch):
    real_all, style_all, rng, d_rng, g_rng, slope = prologue(state, batch)
    d, d_opt = state["d"], state["d_opt"]
    for i in range(lc.n_critic):
      j = i % real_all.shape[0]
      d, d_opt, _ = critic(state["g"], state["g_stats"], d, d_opt, real_all[j], style_all[j],
                           jax.random.fold_in(d_rng, i), slope)
    state = dict(state, d=d, d_opt=d_opt)
    return g_update(state, real_all[0], style_all[0], g_rng, rng, slope), {}

  return step


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/jsb_musegan.py")
  ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--start-step", type=int, default=None,
                  help="state step to time from (default: past the critic warm-up)")
  args = ap.parse_args()

  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxgan import config as config_lib, gan, profiling, sharding

  config = config_lib.load_config(args.config, [o.split("=", 1) for o in args.override])
  tc, lc = config.train, config.loss
  mesh = sharding.make_mesh(tc.mesh_data, tc.mesh_fsdp)
  engine = gan.Engine(config, mesh)
  start = profiling.steady_step(config) if args.start_step is None else args.start_step
  rng = np.random.default_rng(0)
  shape = (lc.n_critic, tc.global_batch) + config_lib.data_shape(config)
  batch = {"pianoroll": jnp.asarray((rng.random(shape) < 0.05).astype(np.uint8)),
           "style": jnp.zeros(shape[:2], jnp.int32)}

  def fresh_state():
    state = engine.init(jax.random.PRNGKey(0))
    return dict(state, step=jnp.asarray(start, state["step"].dtype))

  no_donate = engine.jit(engine.train_step,
                         in_shardings=(engine.state_sharding, sharding.batch(mesh, leading=1)),
                         out_shardings=(engine.state_sharding, sharding.replicated(mesh)))
  variants: list[tuple[str, Any]] = [("fused, donated (train's step)", engine.step),
                                     ("fused, not donated", no_donate)]
  skipped = ""
  if lc.get("reuse_fake", False):
    skipped = "critic loop in Python: skipped (loss.reuse_fake has no separate G update)"
  else:
    variants.append(("critic loop in Python", None))

  runs = []
  for name, fn in variants:
    bu.log(f"compiling {name} ...")
    state = fresh_state()
    t0 = time.perf_counter()
    if fn is None:
      fn = python_loop_step(engine)
      state, _ = fn(state, batch)   # compiles the pieces on their first call
    else:
      fn = fn.lower(state, batch).compile()
    jax.block_until_ready(state)
    runs.append(dict(name=name, fn=fn, state=state, compile_s=time.perf_counter() - t0, ms=[]))

  for run in runs:   # warm-up
    for _ in range(2):
      run["state"], _ = run["fn"](run["state"], batch)
    jax.block_until_ready(run["state"])
  for rep in range(args.reps):
    bu.log(f"rep {rep + 1}/{args.reps}")
    for run in runs:
      state = run["state"]
      t0 = time.perf_counter()
      for _ in range(args.steps):
        state, metrics = run["fn"](state, batch)
      jax.block_until_ready((state, metrics))
      run["ms"].append((time.perf_counter() - t0) / args.steps * 1e3)
      run["state"] = state

  base = statistics.median(runs[0]["ms"])
  rows = []
  for run in runs:
    med = statistics.median(run["ms"])
    rows.append([run["name"], f"{run['compile_s']:.1f}", f"{med:.1f}",
                 f"{min(run['ms']):.1f}-{max(run['ms']):.1f}", f"{med / base:.2f}x"])
  extra = [f"config: {args.config} (global batch {tc.global_batch}, n_critic {lc.n_critic}, "
           f"state step from {start})"]
  print("\n".join(bu.header("Engine options: fused critic loop, donation", extra)))
  print()
  print("\n".join(bu.table(
      ["variant", "compile or first call (s)", "ms per step, median", "min-max",
       "vs train's step"], rows, [False, True, True, True, True])))
  if skipped:
    print(f"\n{skipped}")
  print(f"\n{args.reps} interleaved runs x {args.steps} steps per variant; each run waits for "
        "its last step.")


if __name__ == "__main__":
  main()
