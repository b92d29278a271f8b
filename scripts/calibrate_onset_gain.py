"""Calibrates a voices model's note density: per-voice factors (model.onset_gain) on the metre
prior's chance of a note start, so that free samples sing as many notes per bar as the
training split. Prints one row per sampling round; with --write, saves the best gain in the
run's (or export's) config.json.

    python scripts/calibrate_onset_gain.py --workdir runs/jsb_chorale --write

A run saved before per-voice onset rates existed: add --per-voice-rates (they are measured
again from the training split first; needs the data set). --lines first calibrates the share
of held chords (model.hold_shares, where the hold prior is on), the lines' leap sizes and notes
tied over a beat (model.interval_weights, syncopation_weights: evaluate.calibrate_sampler), as
`jaxgan export --calibrate` does.

Done for the shipped chorale model (jaxgan/pretrained/jsb): at a final temperature of 0.7
its alto and tenor held notes longer than Bach's (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from jaxgan import config as config_lib  # noqa: E402
from jaxgan import evaluate, sample  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a voices run or a generator export")
  parser.add_argument("--split", default="train", help="the data whose density to match")
  parser.add_argument("--num", type=int, default=64, help="free samples per round")
  parser.add_argument("--iterations", type=int, default=3, help="rounds after the first")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--write", action="store_true", help="save the gain in config.json")
  parser.add_argument("--per-voice-rates", action="store_true",
                      help="first measure model.onset_rates again, a row per voice (runs "
                           "saved before per-voice rates have one row for all voices)")
  parser.add_argument("--lines", action="store_true",
                      help="first calibrate model.interval_weights and syncopation_weights "
                           "(leaps, notes tied over a beat)")
  parser.add_argument("--hold-split", default="train",
                      help="with --lines and the hold prior on: the split whose held chords "
                           "per bar to match")
  args = parser.parse_args()
  if args.per_voice_rates:
    config = config_lib.load_run_config(args.workdir)
    config.model.onset_rates = ()
    evaluate.resolve_sampler_priors(config)
    config_lib.save_run_config(config, args.workdir)
    print(f"wrote model.onset_rates ({len(config.model.onset_rates)} shares) to "
          f"{args.workdir}/config.json")
  gen = sample.Generator.from_workdir(args.workdir)
  t0 = time.perf_counter()
  if args.lines:
    gen = evaluate.calibrate_sampler(gen, seed=args.seed, hold_split=args.hold_split)
    gain = tuple(gen.config.model.onset_gain)
  else:
    gain, rows = evaluate.calibrate_onset_gain(gen, split=args.split, num=args.num,
                                               iterations=args.iterations, seed=args.seed)
    print(f"{'round':>5}  {'gain S A T B':>27}  {'notes/bar':>27}  {'target':>27}")
    for i, row in enumerate(rows):
      print(f"{i:5d}  {' '.join(f'{x:6.3f}' for x in row['gain']):>27}  "
            f"{' '.join(f'{x:6.3f}' for x in row['notes_per_bar']):>27}  "
            f"{' '.join(f'{x:6.3f}' for x in row['target']):>27}")
  print(f"best: model.onset_gain={gain}  ({time.perf_counter() - t0:.0f} s)")
  if args.write:
    config = config_lib.load_run_config(args.workdir)
    config.model.onset_gain = gain
    if args.lines:
      for key in ("interval_prior", "interval_weights", "syncopation_weights", "hold_shares"):
        config.model[key] = gen.config.model[key]
    config_lib.save_run_config(config, args.workdir)
    print(f"wrote {args.workdir}/config.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
