"""Machine listening: the rendered audio of a voices generator's pieces beside Bach's, a table.

Writes `--num` free samples of the generator and as many windows of Bach's chorales from
`--split` (evenly spread) through the same MIDI writer, renders all of them with FluidSynth,
and measures from the audio, beat by beat (render.listen): agreement with the written notes,
how much the heard harmony moves, static and silent beats, pitch classes heard per beat. Two
bad pieces per Bach window show what the measures catch: "one chord" (its first sounding
chord held to the end) and "random" (each voice a random pitch of its range every beat).

    python scripts/listen.py --pretrained jsb --out /tmp/listen [--num 16] [--seed 0]

It is no substitute for listening: it tells silence, a broken render and harmony that does not
move from music, not good music from plain.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import evaluate, render, sample  # noqa: E402

MEASURES = ("agreement", "change", "static", "silent", "pitch_classes")


def one_chord(window: np.ndarray) -> np.ndarray:
  """The window's first step where every voice sounds, held to the end."""
  sounding = window.reshape(-1, *window.shape[2:]).any(axis=1).all(axis=1)   # [steps]
  first = int(np.argmax(sounding))
  flat = window.reshape(-1, *window.shape[2:])
  return np.broadcast_to(flat[first], flat.shape).reshape(window.shape).copy()


def random_lines(window: np.ndarray, rng: np.random.Generator, steps_per_beat: int
                 ) -> np.ndarray:
  """Each voice a random pitch within the window's own range of that voice, every beat."""
  flat = window.reshape(-1, *window.shape[2:])            # [steps, pitches, voices]
  out = np.zeros_like(flat)
  for v in range(flat.shape[2]):
    pitches = np.nonzero(flat[:, :, v].any(axis=0))[0]
    for start in range(0, len(flat), steps_per_beat):
      out[start:start + steps_per_beat, rng.choice(pitches), v] = 1
  return out.reshape(window.shape)


def measure(paths: list[str]) -> dict[str, np.ndarray]:
  rows = [render.listen(p) for p in paths]
  return {m: np.array([r[m] for r in rows]) for m in MEASURES}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a train workdir or a generator export")
  src.add_argument("--pretrained", help="a shipped generator (jsb)")
  parser.add_argument("--split", default="test")
  parser.add_argument("--num", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="folder for the MIDI and WAV files")
  args = parser.parse_args()

  render.check_setup()
  gen = sample.Generator.from_workdir(args.workdir or sample.pretrained_path(args.pretrained))
  real = evaluate.split_windows(gen.config, args.split)
  real = real[np.linspace(0, len(real) - 1, min(args.num, len(real))).astype(int)]
  rng = np.random.default_rng(args.seed)
  spb = int(gen.config.data.steps_per_beat)
  sets = {
      "model": np.asarray(sample.sample(gen, jax.random.PRNGKey(args.seed), args.num)),
      "Bach": real,
      "one chord": np.stack([one_chord(w) for w in real]),
      "random": np.stack([random_lines(w, rng, spb) for w in real]),
  }
  print(f"{'pieces':12s} {'n':>3} " + " ".join(f"{m:>13s}" for m in MEASURES))
  for name, rolls in sets.items():
    folder = os.path.join(args.out, name.replace(" ", "_"))
    midis = sample.write_samples(gen, rolls, folder, prefix="piece")
    written, errors = render.render_many(midis)
    for e in errors:
      print(f"  {e}")
    values = measure([os.path.splitext(w)[0] + ".mid" for w in written])
    cells = " ".join(f"{np.nanmean(v):7.3f}±{np.nanstd(v):5.3f}" for v in values.values())
    print(f"{name:12s} {len(written):3d} {cells}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
