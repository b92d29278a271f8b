"""Where a voices model starts its notes, by 16th of the bar, beside Bach: a table.

Two views of metre. (1) Free samples: the share of onsets at each step of the bar, and
`on_beat` per voice. (2) The network alone, given Bach: windows of the split with random cells
hidden (rate `--rate`); at hidden cells whose previous step is given, how often the network's
most likely class differs from that previous step (it starts a note), beside how often Bach's
does. A network that has learnt the metre starts notes where Bach does and almost never at
odd 16ths.

    python scripts/metre_profile.py --workdir jaxgan/pretrained/jsb --split validation
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import evaluate, sample, voice_metrics  # noqa: E402
from jaxgan.models import voices as voices_lib  # noqa: E402


def onset_profile(voices: voice_metrics.Voices) -> np.ndarray:
  """Share of all onsets at each step of the bar [steps_per_bar]."""
  t = voices.onset.shape[1]
  pos = np.arange(t) % voices.steps_per_bar
  counts = np.array([voices.onset[:, pos == p].sum() for p in range(voices.steps_per_bar)])
  return counts / max(counts.sum(), 1)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a voices run or a generator export")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--num", type=int, default=64, help="free samples")
  parser.add_argument("--windows", type=int, default=96, help="windows for the network view")
  parser.add_argument("--rate", type=float, default=0.5, help="share of cells hidden")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  gen = sample.Generator.from_workdir(args.workdir)
  model = gen.engine
  real = evaluate.split_windows(gen.config, args.split)
  spec = evaluate.roll_spec(gen.config, gen.tracks)
  bach = voice_metrics.from_rolls(real > 0, spec)
  rolls = np.asarray(sample.sample(gen, jax.random.PRNGKey(args.seed), args.num))
  free = voice_metrics.from_rolls(rolls, spec)

  # The network's argmax at hidden cells, Bach's cells around them.
  windows = jnp.asarray(real[:args.windows])
  b, bars, steps, _, tracks = windows.shape
  key = jax.random.PRNGKey(args.seed + 1)
  known = jax.random.uniform(key, (b, bars * steps, tracks)) >= args.rate
  cond = {"context": windows, "known": model.known_in_bars(known)}
  z = jax.random.normal(jax.random.fold_in(key, 1), (b, model.latent_size))
  out = model.generator.apply(gen.variables, z, cond)
  pred = np.asarray(jnp.argmax(out["logits"], -1))
  classes = np.asarray(voices_lib.classes_from_roll(model.layout, windows)[0])
  voice_known = np.asarray(known)[..., list(model.layout.tracks)]
  prev = np.concatenate([np.full_like(classes[:, :1], -1), classes[:, :-1]], 1)
  prev_known = np.concatenate([np.zeros_like(voice_known[:, :1]), voice_known[:, :-1]], 1)
  asked = ~voice_known & prev_known
  pos = (np.arange(bars * steps) % steps)[None, :, None]

  print(f"{gen.step} steps; {args.split} split; {len(real)} windows of Bach, {args.num} free "
        f"samples; network view: {args.windows} windows, {args.rate:.0%} of cells hidden")
  print(f"{'step':>4} {'Bach onsets':>12} {'sample onsets':>14} {'Bach starts':>12} "
        f"{'network starts':>15}")
  bach_on, free_on = onset_profile(bach), onset_profile(free)
  for p in range(steps):
    cells = asked & (pos == p)
    print(f"{p:4d} {bach_on[p]:12.3f} {free_on[p]:14.3f} "
          f"{(classes != prev)[cells].mean():12.3f} {(pred != prev)[cells].mean():15.3f}")
  odd = asked & (pos % 2 == 1)
  print(f"odd 16ths: Bach starts {(classes != prev)[odd].mean():.3f}, the network "
        f"{(pred != prev)[odd].mean():.3f}")
  on_beat = {name: np.nanmean(voice_metrics.piece_statistics(v)["on_beat"], 0)
             for name, v in (("Bach", bach), ("samples", free))}
  for name, values in on_beat.items():
    print(f"on_beat {name:8s} " + " ".join(f"{x:.2f}" for x in values))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
