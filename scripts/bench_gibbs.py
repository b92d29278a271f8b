"""Gibbs sampling time of voices generators: seconds per batch of free samples, a table.

Each generator (a run or an export) is compiled and called once first; then --reps rounds
call each in turn (interleaved, so a loaded machine slows them alike) through the user-facing
`sample.sample(gen, key, num)`.

    python scripts/bench_gibbs.py --workdirs OLD_EXPORT,jaxgan/pretrained/jsb --num 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import sample  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdirs", required=True, help="comma-separated runs or exports")
  parser.add_argument("--num", type=int, default=64)
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  gens = {w: sample.Generator.from_workdir(w) for w in args.workdirs.split(",")}
  for gen in gens.values():
    np.asarray(sample.sample(gen, jax.random.PRNGKey(0), args.num))   # compile and warm up
  seconds = {w: [] for w in gens}
  for rep in range(args.reps):
    for w, gen in gens.items():
      t0 = time.perf_counter()
      np.asarray(sample.sample(gen, jax.random.PRNGKey(rep + 1), args.num))
      seconds[w].append(time.perf_counter() - t0)
  print(f"{'generator':40s} {'rounds':>6} {'metre':>5} {'penalty':>7} {'ornament':>8} "
        f"{'syncopation':>11} {'hold':>5} {f'median s / {args.num}':>14} {'range':>12}")
  for w, gen in gens.items():
    m = gen.engine.model_cfg
    v = seconds[w]
    print(f"{w[-40:]:40s} {m.gibbs_rounds:6d} {m.metre_prior:5.2f} {m.voice_leading_penalty:7.1f} "
          f"{str(bool(m.get('ornament_prior'))):>8} {str(bool(m.get('syncopation_weights'))):>11} "
          f"{str(bool(m.get('hold_prior'))):>5} {statistics.median(v):14.1f} {min(v):5.1f}-{max(v):.1f}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
