"""`jaxgan eval`: musical metrics of generated samples against held-out real data."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from jaxgan import metrics as metrics_lib


def roll_spec(gen) -> metrics_lib.RollSpec:
  d = gen.config.data
  return metrics_lib.RollSpec(
      steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
      track_names=tuple(t.name for t in gen.tracks),
      drum_tracks=tuple(i for i, t in enumerate(gen.tracks) if t.is_drum))


def real_windows(config, split: str, num: int) -> np.ndarray:
  """Up to `num` real piano-roll windows of `split` (uint8, onset-marked), in a fixed order."""
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  rolls = []
  for batch in pipeline.eval_batches(config, split, batch_size=min(256, num)):
    rolls.append(batch["pianoroll"][batch["valid"]])
    if sum(len(r) for r in rolls) >= num:
      break
  return np.concatenate(rolls)[:num] if rolls else np.zeros((0,), np.uint8)


def _merged(rolls, spec) -> dict[str, np.ndarray]:
  out = dict(metrics_lib.track_metrics(rolls, spec))
  out.update(metrics_lib.pair_metrics(rolls, spec))
  return out


def evaluate(gen, *, split: str = "test", num: int = 256, seed: int = 0) -> dict[str, Any]:
  """Metrics of `num` EMA samples vs `num` real windows of `split`, and set-level OA/KL.

  A voices model (model.arch="voices") gets `evaluate_voices` instead.
  """
  from jaxgan import sample  # pylint: disable=import-outside-toplevel
  if gen.is_voice_model:
    return evaluate_voices(gen, split=split, num=num, seed=seed)
  spec = roll_spec(gen)
  generated = sample.sample(gen, jax.random.PRNGKey(seed), num)
  real = real_windows(gen.config, split, num)
  rows = {"generated": _merged(generated, spec)}
  result: dict[str, Any] = {"step": gen.step, "num_generated": int(len(generated)),
                            "split": split, "num_real": int(len(real))}
  if len(real):
    rows = {"data": _merged(real, spec), **rows}
    result["set_comparison"] = metrics_lib.compare_sets(
        metrics_lib.song_features(generated, spec), metrics_lib.song_features(real, spec))
  result["table"] = metrics_lib.summary_table(rows, spec)
  result["metrics"] = {label: {k: np.asarray(v).tolist() for k, v in row.items()}
                       for label, row in rows.items()}
  return result


def write_json(result: dict[str, Any], path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump({k: v for k, v in result.items() if k != "table"}, f, indent=2,
              default=lambda x: None if x != x else float(x))


# --------------------------------------------------------------------------------------------
# Voices models: the chorale measures (jaxgan/voice_metrics.py) on a held-out split.


def split_windows(config, split: str, *, bars: int | None = None) -> np.ndarray:
  """Every window of `bars` bars (default: the run's) of `split`, not overlapping, in order."""
  config = config.copy_and_resolve_references()
  config.data.n_bars = bars or config.data.n_bars
  config.data.hop_bars = config.data.n_bars
  return real_windows(config, split, 10 ** 6)


def fill_windows(gen, windows: np.ndarray, known: np.ndarray, key: jax.Array, *,
                 batch: int = 64, temperature: float | tuple[float, float] | None = None
                 ) -> np.ndarray:
  """uint8 rolls: `windows` with the cells not `known` (bool [N, T, tracks]) redrawn by the
  voices model's Gibbs sampler; known cells come back unchanged."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  engine = gen.engine
  # The model's own schedule, or one constant temperature when asked for.
  if temperature is None:
    temperature, final = engine.model_cfg.temperature, engine.model_cfg.final_temperature
  elif isinstance(temperature, tuple):
    temperature, final = temperature
  else:
    final = temperature
  n, bars, steps, _, tracks = windows.shape
  out = []
  for start in range(0, n, batch):
    roll = windows[start:start + batch]
    size = len(roll)
    pad = batch - size if n > batch else 0   # one compiled shape for every batch
    roll_p = np.concatenate([roll, np.zeros((pad,) + roll.shape[1:], roll.dtype)])
    kn = known[start:start + batch].reshape(size, bars, steps, tracks)
    kn_p = np.concatenate([kn, np.ones((pad,) + kn.shape[1:], bool)])
    k = jax.random.fold_in(key, start)
    z = jax.random.normal(k, [len(roll_p), engine.latent_size])
    filled = engine.fill_jit(gen.variables["params"], z, jax.random.fold_in(k, 1),
                             {"context": jnp.asarray(roll_p), "known": jnp.asarray(kn_p)},
                             jnp.float32(temperature), jnp.float32(final))
    out.append(np.asarray(jax.device_get(filled))[:size])
  return np.concatenate(out)


def evaluate_voices(gen, *, split: str = "test", num: int = 64, seed: int = 0,
                    restoration: bool = True, accompaniment: bool = True) -> dict[str, Any]:
  """The chorale figures of a voices model against the held-out `split`:

  - "report": `num` free samples of the run's window length vs every window of the split
    (voice_metrics.report: statistics, overlapping areas, voice leading, targets);
  - "nll": NLL per hidden voice cell (nats) under each mask kind (voicegan.MASK_KINDS);
  - "restoration": 2 consecutive bars hidden in every voice at a random position of each
    window (never the first bar), filled by the model, beside the baselines;
  - "accompaniment": soprano given, alto/tenor/bass generated.
  Onsets are compared at pitch changes: the standard split cannot mark repeated notes.
  """
  from jaxgan import sample, voicegan, voice_metrics  # pylint: disable=import-outside-toplevel
  spec = roll_spec(gen)
  key = jax.random.PRNGKey(seed)
  real = split_windows(gen.config, split)
  generated = sample.sample(gen, key, num)
  result: dict[str, Any] = {"step": gen.step, "split": split, "num_generated": int(num),
                            "num_real": int(len(real))}
  if not len(real):
    result["table"] = f"no {split} windows: nothing to compare with"
    return result
  report = voice_metrics.report(generated, real, spec=spec, onsets_at_changes=True, seed=seed)
  result["report"] = {k: v for k, v in report.items() if k != "table"}
  tables = [f"free samples ({num}) vs {len(real)} {split} windows of Bach:", report["table"]]
  nll = voicegan.heldout_nll(gen.engine, gen.variables["params"], real, seed=seed)
  result["nll"] = nll
  tables.append("NLL per hidden voice cell (nats), mask kinds: " + ", ".join(
      f"{k.split('/')[-1]} {v:.3f}" for k, v in nll.items()))
  truth = voice_metrics.from_rolls(real, spec)
  n, bars, steps, _, tracks = real.shape
  if restoration and bars >= 3:
    hidden = voice_metrics.bar_span_mask(n, bars, steps, tracks, span=2, seed=seed, first=1)
    filled = fill_windows(gen, real, ~hidden, jax.random.fold_in(key, 1))
    rest = voice_metrics.restoration_report(
        truth, {"model (Gibbs)": voice_metrics.from_rolls(filled, spec)}, hidden,
        onsets_at_changes=True)
    result["restoration"] = {k: v for k, v in rest.items() if k != "table"}
    tables += ["restoration: 2 bars hidden in every voice, per hidden cell:", rest["table"]]
  if accompaniment and tracks > 1:
    known = np.zeros((n, bars * steps, tracks), bool)
    known[..., 0] = True
    filled = fill_windows(gen, real, known, jax.random.fold_in(key, 2))
    acc = voice_metrics.accompaniment_scores(truth, voice_metrics.from_rolls(filled, spec),
                                             given=(0,))
    result["accompaniment"] = acc
    ref_vl = voice_metrics.voice_leading(truth)
    lines = [f"accompaniment: {tracks - 1} voices written under Bach's soprano; Bach's bass pitch "
             f"class in the generated chord {100 * acc['bass_pc_in_chord']:.1f} %, in the "
             f"generated bass {100 * acc['bass_pc_equal']:.1f} %",
             "  rule                 model    Bach   (per voice-pair transition, %)"]
    for rule, rate in acc["voice_leading"].items():
      lines.append(f"  {rule:<20} {100 * rate:6.2f}  {100 * ref_vl[rule]['rate']:6.2f}")
    tables.append("\n".join(lines))
  result["table"] = "\n\n".join(tables)
  return result
