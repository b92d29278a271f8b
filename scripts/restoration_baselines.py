"""Restoration against its baselines, on the test windows `jaxgan eval` uses: 2 consecutive bars
of every voice hidden at a random position of each 8-bar window (never the first bar), the same
windows and hidden bars for every method, one table.

Methods: the voices model (Gibbs fill, as `jaxgan eval` runs it), "repeat the previous bar",
"hold the previous note" and, with --latent-run, the latent search a MuseGAN run restores with
(`jaxgan inpaint` on an unconditional run: `--candidates` latents are decoded for each 4-bar
window around the gap and the one that agrees best with the given cells fills it; its voices
are the highest sounding pitch of each track, the chorale data's own reading of a voice).

    jaxgan train --config configs/jsb_musegan.py:demo \
        --config.data.name=jsb_chorales_standard --workdir runs/musegan_std
    python scripts/restoration_baselines.py --latent-run runs/musegan_std
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import evaluate, inpaint, sample, voice_metrics  # noqa: E402


def latent_search(gen, windows: np.ndarray, hidden: np.ndarray, key: jax.Array,
                  candidates: int) -> np.ndarray:
  """bool rolls: each window's hidden bars filled by `inpaint.fill`'s latent search."""
  n, bars, steps, _, tracks = windows.shape
  hidden_bars = hidden.reshape(n, bars, steps, tracks).any(2)      # [N, bars, tracks]
  out = np.empty(windows.shape, bool)
  for i in range(n):
    out[i] = inpaint.fill(gen, windows[i] > 0, ~hidden_bars[i], jax.random.fold_in(key, i),
                          candidates=candidates)
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="", help="a voices run or export (default: the "
                      "shipped chorale model)")
  parser.add_argument("--latent-run", default="",
                      help="a MuseGAN run on the same grid, restored by latent search")
  parser.add_argument("--candidates", type=int, default=64)
  parser.add_argument("--split", default="test")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  gen = sample.Generator.from_workdir(args.workdir or sample.pretrained_path("jsb"))
  spec = evaluate.roll_spec(gen.config, gen.tracks)
  real = evaluate.split_windows(gen.config, args.split)
  n, bars = real.shape[:2]
  timings = {}
  start = time.perf_counter()
  # The same windows, hidden bars and key as `jaxgan eval --seed SEED`.
  hidden, gibbs = evaluate.restoration_fill(gen, real, seed=args.seed)
  filled = {"voices model (Gibbs)": voice_metrics.from_rolls(gibbs, spec)}
  timings["voices model (Gibbs)"] = time.perf_counter() - start
  key = jax.random.PRNGKey(args.seed)
  if args.latent_run:
    latent = sample.Generator.from_workdir(args.latent_run)
    grid = ("num_pitches", "lowest_pitch", "steps_per_beat", "meter")
    differ = [k for k in grid if tuple(np.atleast_1d(latent.config.data[k])) !=
              tuple(np.atleast_1d(gen.config.data[k]))]
    if differ:
      print(f"{args.latent_run}: its grid differs from the voices model's in data."
            f"{', data.'.join(differ)}", file=sys.stderr)
      return 2
    start = time.perf_counter()
    name = f"latent search ({args.candidates} latents)"
    filled[name] = voice_metrics.from_rolls(
        latent_search(latent, real, hidden, jax.random.fold_in(key, 3), args.candidates), spec)
    timings[name] = time.perf_counter() - start
  truth = voice_metrics.from_rolls(real, spec)
  report = voice_metrics.restoration_report(truth, filled, hidden, onsets_at_changes=True)
  print(f"{n} {args.split} windows of {bars} bars, 2 bars hidden in every voice; onsets at "
        "pitch changes")
  print(report["table"])
  print("\nall voices together:")
  print(f"{'method':<32} {'cells':>7} {'pitch class':>12} {'onset F1':>9} {'rhythm F1':>10} "
        f"{'s':>6}")
  for method, by_voice in report["methods"].items():
    a = by_voice["all"]
    print(f"{method:<32} {100 * a['cell_accuracy']:6.1f}% {100 * a['pitch_class_accuracy']:11.1f}%"
          f" {100 * a['onset_f1']:8.1f}% {100 * a['rhythm_f1']:9.1f}% "
          f"{timings.get(method, 0.0):6.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
