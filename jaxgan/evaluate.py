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
  """Metrics of `num` EMA samples vs `num` real windows of `split`, and set-level OA/KL."""
  from jaxgan import sample  # pylint: disable=import-outside-toplevel
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
