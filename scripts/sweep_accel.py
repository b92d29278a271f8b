"""Short training sweeps on an accelerator machine that has no TensorFlow (or data stack).

  # here: a pool of augmented training windows and the eval windows, from the real pipeline
  python scripts/sweep_accel.py export --config configs/jsb_musegan.py:demo --out pool.npz
  # there: one short run per variant, the engine's own step on batches drawn from the pool
  python scripts/sweep_accel.py run --config configs/jsb_musegan.py:demo --pool pool.npz \
      --steps 1200 --variant base= --variant cond=conditioning.infill=0.2,conditioning.accompany=0.2

Each run reports the default evaluation against the eval windows (eval/oa/mean, eval/gap/mean,
empty-bar rate) every --eval-every steps and at the end, as a Markdown table. Batches are drawn
uniformly from the pool, so a run is close to, not identical with, `jaxgan train`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export(args) -> None:
  from jaxgan import config as config_lib, evaluate  # pylint: disable=import-outside-toplevel
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config(args.config)
  ds = pipeline.make_dataset(config, process_index=0, process_count=1).as_numpy_iterator()
  rolls = np.concatenate([b["pianoroll"].reshape((-1,) + b["pianoroll"].shape[2:]) > 0
                          for _, b in zip(range(args.batches), ds)])
  real = evaluate.real_windows(config, config.data.eval_split, config.train.eval_num)
  np.savez_compressed(args.out, pool=np.packbits(rolls, axis=-1), pool_shape=rolls.shape,
                      real=real)
  print(f"wrote {args.out}: {len(rolls)} training windows, {len(real)} eval windows, "
        f"{os.path.getsize(args.out) / 2**20:.1f} MiB")


def run(args) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from jaxgan import config as config_lib, evaluate, gan, sharding  # pylint: disable=import-outside-toplevel
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  data = np.load(args.pool)
  shape = tuple(data["pool_shape"])
  pool = np.unpackbits(data["pool"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
  real = data["real"]
  print("| variant | step | eval/oa/mean | eval/gap/mean | empty bars | steps/s |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  for spec in args.variant:
    name, _, overrides = spec.partition("=")
    extra = [f"--config.{o}" for o in overrides.split(",") if o]
    config = config_lib.load_config(args.config, extra)
    pipeline.resolve_styles(config)
    mesh = sharding.make_mesh(-1, 1)
    engine = gan.Engine(config, mesh)
    state = engine.init(jax.random.PRNGKey(config.train.seed))
    rng = np.random.default_rng(config.train.seed)
    n, b = config.loss.n_critic, config.train.global_batch
    sharding_ = sharding.batch(mesh, leading=1)

    def batch():
      idx = rng.integers(0, len(pool), n * b)
      roll = pool[idx].reshape((n, b) + shape[1:]).astype(np.uint8)
      return jax.device_put({"pianoroll": roll, "style": np.zeros([n, b], np.int32)}, sharding_)

    reference = evaluate.data_reference(config, real)
    step_fn = engine.step.lower(state, batch()).compile()
    t = time.perf_counter()
    for step in range(1, args.steps + 1):
      state, _ = step_fn(state, batch())
      if step % args.eval_every == 0 or step == args.steps:
        jax.block_until_ready(state)
        rate = step / (time.perf_counter() - t)
        m = evaluate.sample_metrics(engine, state, reference)
        empty = np.mean([v for k, v in m.items() if k.startswith("eval/EB/")])
        print(f"| {name} | {step} | {m.get('eval/oa/mean', float('nan')):.3f} | "
              f"{m.get('eval/gap/mean', float('nan')):.3f} | {100 * empty:.0f} % | "
              f"{rate:.0f} |", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export")
  e.add_argument("--config", required=True)
  e.add_argument("--out", required=True)
  e.add_argument("--batches", type=int, default=100, help="pipeline steps to draw windows from")
  r = sub.add_parser("run")
  r.add_argument("--config", required=True)
  r.add_argument("--pool", required=True)
  r.add_argument("--steps", type=int, default=1200)
  r.add_argument("--eval-every", type=int, default=400)
  r.add_argument("--variant", action="append", required=True,
                 help="NAME=key=value,key=value (config overrides without --config.)")
  args = p.parse_args()
  export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
  main()
