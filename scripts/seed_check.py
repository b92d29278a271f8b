"""Does a voices recipe fall silent at some seed? Trains it at several seeds and prints, per seed,
each voice's rest share and notes per bar in free samples beside the data's.

    python scripts/seed_check.py --config configs/jsb_chorale.py:demo --seeds 0,1,2,3

A seed passes when every voice's rest share is within 10 % of the data's, or within 0.5 points
of it (the target `jaxgan eval` uses: Bach rests ~1-1.5 % of the time), and no voice is silent.
The data's figures are those of every excerpt of the run's length one bar apart, as training
crops them, of the split it trained on (`--reference`). Most of a chorale's rests are the
pickup of its first bar, so the share differs by split with how many excerpts hold one: JSB
train 1.06 %, validation 1.5 %, test 1.2 %. It takes a few hundred samples to measure it: one
sample in six or seven rests at all (`--num`, default 256).
`--evaluate-only` samples runs already trained under ROOT/seedN; `--pickups` turns the pickup
prior (model.pickup_prior) on for runs saved before it. `--calibrate` samples each run
as `jaxgan export --calibrate` ships it: its sampler's note-start gain set on the training
split first (evaluate.calibrate_onset_gain), and the onset rates measured per voice where the
run saved one shared row (runs from before per-voice rates).
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


def calibrated(gen: sample.Generator) -> sample.Generator:
  m = gen.config.model
  if len(tuple(m.onset_rates)) == gen.engine.steps:      # one row shared by the voices
    config = gen.config.copy_and_resolve_references()
    config.model.onset_rates = ()
    evaluate.resolve_sampler_priors(config)
    gen = evaluate.with_model_settings(gen, onset_rates=config.model.onset_rates)
  gain, _ = evaluate.calibrate_onset_gain(gen)
  print(f"{gen.config.train.seed}: calibrated model.onset_gain={gain}", flush=True)
  return evaluate.with_model_settings(gen, onset_gain=gain)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/jsb_chorale.py:demo")
  parser.add_argument("--seeds", default="0,1,2,3")
  parser.add_argument("--root", default="runs/seeds", help="one workdir per seed under this")
  parser.add_argument("--num", type=int, default=256, help="samples per seed")
  parser.add_argument("--reference", default="train", choices=("train", "validation", "test"),
                      help="the split whose excerpts' rest share a seed must match")
  parser.add_argument("--evaluate-only", action="store_true",
                      help="do not train: sample the runs already under ROOT/seedN")
  parser.add_argument("--calibrate", action="store_true",
                      help="calibrate each run's note-start gain on the training split "
                           "first, as `jaxgan export --calibrate` does")
  parser.add_argument("--pickups", action="store_true",
                      help="sample runs saved before model.pickup_prior with it on (its "
                           "shares measured from the training split)")
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
    if args.pickups and not gen.config.model.get("pickup_prior", False):
      gen = evaluate.with_pickup_prior(gen)
    if args.calibrate:
      gen = calibrated(gen)
    if real is None:
      real = evaluate.split_windows(gen.config, args.reference, hop_bars=1)
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
  print(f"{args.reference[:5]:>5}{'':>5}  "
        f"{' '.join(f'{x:6.3f}' for x in data['rest_share']):>27}  "
        f"{' '.join(f'{x:5.2f}' for x in data['notes_per_bar']):>23}")
  for seed, minutes, rest, notes, ok in rows:
    print(f"{seed:4d} {minutes:5.1f}  {' '.join(f'{x:6.3f}' for x in rest):>27}  "
          f"{' '.join(f'{x:5.2f}' for x in notes):>23}  {'yes' if ok else 'NO'}")
  return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
