"""Sampling settings of a voices model against held-out Bach: one row per (rounds, temperature).

Choose `model.temperature` / `model.gibbs_rounds` on the validation split, then report on the
test split with `jaxgan eval`. Each row: free samples of the run's window length read as voices
against every validation window (jaxgan/voice_metrics.report): figures within target, notes per
bar and rest share per voice, parallel fifths/octaves per voice-pair transition, and seconds.

    python scripts/sweep_gibbs.py --workdir jaxgan/pretrained/jsb --temperatures 1.0,0.8 \
        --rounds 48 --num 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxgan import evaluate, sample, voice_metrics  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a voices run or a generator export")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--temperatures", default="1.0,0.9,0.8,0.7",
                      help="comma-separated T (constant) or T0:T1 (first round to last)")
  parser.add_argument("--rounds", default="48", help="comma-separated Gibbs round counts")
  parser.add_argument("--num", type=int, default=64)
  parser.add_argument("--pmin", type=float, help="model.gibbs_pmin for every row")
  parser.add_argument("--penalty", type=float,
                      help="model.voice_leading_penalty for every row (default: the model's)")
  parser.add_argument("--metre", default="",
                      help="comma-separated model.metre_prior weights (default: the model's)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--restoration", action="store_true",
                      help="instead: fill 2 hidden bars of every window, onset F1 and cell "
                           "accuracy beside repeating the previous bar")
  args = parser.parse_args()
  if args.restoration:
    return restoration(args)
  real = None
  print(f"{'rounds':>6} {'metre':>5} {'T':>5} {'within':>8} {'notes/bar S A T B':>24} "
        f"{'on_beat S A T B':>20} {'QN S A T B':>20} {'rest':>6} {'par5':>7} {'par8':>7} "
        f"{'s':>6}")
  for rounds, gen in _generators(args):
    metre = gen.engine.model_cfg.metre_prior
    if real is None:
      real = evaluate.split_windows(gen.config, args.split)
      spec = evaluate.roll_spec(gen.config, gen.tracks)
      bach = voice_metrics.report(real, real, spec=spec, onsets_at_changes=True, with_oa=False)
      vl = bach["voice_leading"]["bach"]
      print(f"{'Bach':>6} {'':>5} {'':>5} {'':>8} "
            f"{' '.join(f'{x:5.2f}' for x in _stat(bach, 'notes_per_bar', 'bach')):>24} "
            f"{' '.join(f'{x:4.2f}' for x in _stat(bach, 'on_beat', 'bach')):>20} "
            f"{' '.join(f'{x:4.2f}' for x in _stat(bach, 'QN', 'bach')):>20} "
            f"{np.mean(_stat(bach, 'rest_share', 'bach')):6.3f} "
            f"{vl['parallel_fifths']['rate']:7.4f} {vl['parallel_octaves']['rate']:7.4f}")
    for text in args.temperatures.split(","):
      temperature, final = _schedule(text)
      t0 = time.perf_counter()
      engine = gen.engine
      n = args.num
      cond = engine.empty_condition(jax.random.PRNGKey(args.seed), n)
      key = jax.random.PRNGKey(args.seed)
      z = jax.random.normal(key, [n, engine.latent_size])
      rolls = np.asarray(jax.device_get(engine.fill_jit(
          gen.variables["params"], z, jax.random.fold_in(key, 1), cond,
          jnp.float32(temperature), jnp.float32(final))))
      seconds = time.perf_counter() - t0
      rep = voice_metrics.report(rolls, real, spec=spec, onsets_at_changes=True,
                                 seed=args.seed)
      vl = rep["voice_leading"]["model"]
      print(f"{rounds:6d} {metre:5.2f} {text:>5} {rep['passed']:3d}/{rep['total']:<4d} "
            f"{' '.join(f'{x:5.2f}' for x in _stat(rep, 'notes_per_bar', 'model')):>24} "
            f"{' '.join(f'{x:4.2f}' for x in _stat(rep, 'on_beat', 'model')):>20} "
            f"{' '.join(f'{x:4.2f}' for x in _stat(rep, 'QN', 'model')):>20} "
            f"{np.mean(_stat(rep, 'rest_share', 'model')):6.3f} "
            f"{vl['parallel_fifths']['rate']:7.4f} {vl['parallel_octaves']['rate']:7.4f} "
            f"{seconds:6.1f}", flush=True)
  return 0


def restoration(args) -> int:
  print(f"{'rounds':>6} {'T':>5} {'cell acc':>9} {'pc acc':>7} {'onset F1':>9}   (repeat previous "
        "bar on the same cells: below)")
  real = None
  first_gen = True
  for rounds, gen in _generators(args):
    if real is None:
      real = evaluate.split_windows(gen.config, args.split)
      spec = evaluate.roll_spec(gen.config, gen.tracks)
      truth = voice_metrics.from_rolls(real, spec)
      n, bars, steps, _, tracks = real.shape
      hidden = voice_metrics.bar_span_mask(n, bars, steps, tracks, span=2, seed=args.seed)
    for i, text in enumerate(args.temperatures.split(",")):
      filled = evaluate.fill_windows(gen, real, ~hidden, jax.random.PRNGKey(args.seed),
                                     temperature=_schedule(text))
      rep = voice_metrics.restoration_report(
          truth, {"model": voice_metrics.from_rolls(filled, spec)}, hidden,
          onsets_at_changes=True)
      first = i == 0 and first_gen
      for name in ("model", "repeat previous bar") if first else ("model",):
        s = rep["methods"][name]["all"]
        metre = gen.engine.model_cfg.metre_prior
        label = (f"{rounds:6d} {text:>5} m{metre:<4}" if name == "model"
                 else f"{'repeat':>6} {'':>11}")
        print(f"{label} {s['cell_accuracy']:9.3f} {s['pitch_class_accuracy']:7.3f} "
              f"{s['onset_f1']:9.3f}", flush=True)
    first_gen = False
  return 0


def _generators(args):
  """(rounds, generator) per row group: settings that change the compiled sampler need a
  fresh generator (set before the sampler is first compiled)."""
  weights = [float(w) for w in args.metre.split(",")] if args.metre else [None]
  for rounds in [int(r) for r in args.rounds.split(",")]:
    for weight in weights:
      gen = sample.Generator.from_workdir(args.workdir)
      gen.engine.model_cfg.gibbs_rounds = rounds
      if args.pmin is not None:
        gen.engine.model_cfg.gibbs_pmin = args.pmin
      if weight is not None:
        gen.engine.model_cfg.metre_prior = weight
      if args.penalty is not None:
        gen.engine.model_cfg.voice_leading_penalty = args.penalty
      yield rounds, gen


def _schedule(text: str) -> tuple[float, float]:
  first, _, last = text.partition(":")
  return float(first), float(last or first)


def _stat(rep, name: str, column: str) -> list[float]:
  return [float(r[column]) for r in rep["rows"] if r["statistic"] == name]


if __name__ == "__main__":
  sys.exit(main())
