"""Does a voices recipe fall silent at some seed? Trains it at several seeds and prints, per seed,
each voice's rest share and notes per bar in free samples beside the validation split's.

    python scripts/seed_check.py --config configs/jsb_chorale.py:demo --seeds 0,1,2,3

A seed passes when every voice's rest share is within 10 % of the data's, or within 0.5 points
of it (the target `jaxgan eval` uses: Bach rests ~1.5 % of the time), and no voice is silent.
The data's figures are those of every validation excerpt of the run's length one bar apart, as
training crops them (the windows that start each chorale hold its pickup's rests: ~5 %).
`--evaluate-only` samples runs already trained under ROOT/seedN.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import config as config_lib  # noqa: E402
from jaxgan import evaluate, sample, train, voice_metrics  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/jsb_chorale.py:demo")
  parser.add_argument("--seeds", default="0,1,2,3")
  parser.add_argument("--root", default="runs/seeds", help="one workdir per seed under this")
  parser.add_argument("--num", type=int, default=64, help="samples per seed")
  parser.add_argument("--evaluate-only", action="store_true",
                      help="do not train: sample the runs already under ROOT/seedN")
  parser.add_argument("overrides", nargs="*", help="--config.key=value")
  args = parser.parse_args()
  rows, real, spec = [], None, None
  for seed in [int(s) for s in args.seeds.split(",")]:
    config = config_lib.load_config(args.config, list(args.overrides)
                                    + [f"--config.train.seed={seed}"])
    workdir = os.path.join(args.root, f"seed{seed}")
    t0 = time.perf_counter()
    if not args.evaluate_only:
      train.train_and_evaluate(config, workdir, progress=False)
    minutes = (time.perf_counter() - t0) / 60
    gen = sample.Generator.from_workdir(workdir)
    if real is None:
      real = evaluate.split_windows(gen.config, "validation", hop_bars=1)
      spec = evaluate.roll_spec(gen.config, gen.tracks)
      data = voice_metrics.statistics(voice_metrics.from_rolls(real, spec))
    stats = voice_metrics.statistics(voice_metrics.from_rolls(
        sample.sample(gen, jax.random.PRNGKey(seed), args.num), spec))
    rest, ref = np.asarray(stats["rest_share"]), np.asarray(data["rest_share"])
    slack = np.maximum(voice_metrics.TARGETS["relative"] * ref,
                       voice_metrics.TARGETS["absolute"]["rest_share"])
    ok = bool((np.abs(rest - ref) <= slack).all() and (rest < 0.5).all())
    rows.append((seed, minutes, rest, np.asarray(stats["notes_per_bar"]), ok))
  print(f"{'seed':>4} {'min':>5}  {'rest share S A T B':>27}  {'notes/bar S A T B':>23}  ok")
  print(f"{'data':>4} {'':>5}  {' '.join(f'{x:6.3f}' for x in data['rest_share']):>27}  "
        f"{' '.join(f'{x:5.2f}' for x in data['notes_per_bar']):>23}")
  for seed, minutes, rest, notes, ok in rows:
    print(f"{seed:4d} {minutes:5.1f}  {' '.join(f'{x:6.3f}' for x in rest):>27}  "
          f"{' '.join(f'{x:5.2f}' for x in notes):>23}  {'yes' if ok else 'NO'}")
  return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
