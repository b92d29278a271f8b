"""Musical metrics of generated samples against real data: `jaxgan eval`, and the periodic
evaluation of a training run with the checkpoint it keeps as best.

Both read the pieces through one `roll_spec` (the data set's tracks, drums included).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import metrics as metrics_lib
from jaxgan import distributed, errors, paths, sample, voice_metrics, voicegan
from jaxgan import workdir as workdir_lib
from jaxgan.midi.song import Track
from jaxgan.models import voices as voices_lib

log = logging.getLogger("jaxgan")


def roll_spec(config, tracks: Sequence[Track]) -> metrics_lib.RollSpec:
  """How the metrics read a run's pieces: its tracks' names and which of them are drums."""
  d = config.data
  return metrics_lib.RollSpec(
      steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
      track_names=tuple(t.name for t in tracks),
      drum_tracks=tuple(i for i, t in enumerate(tracks) if t.is_drum))


def run_spec(config) -> metrics_lib.RollSpec:
  """`roll_spec` of a config's data set (read once per data set)."""
  d = config.data
  return _run_spec(d.name, d.data_dir or "", int(d.num_tracks), int(d.steps_per_beat),
                   int(d.lowest_pitch))


@functools.lru_cache(maxsize=8)
def _run_spec(name, data_dir, num_tracks, steps_per_beat, lowest_pitch) -> metrics_lib.RollSpec:
  data = config_lib.ConfigDict(dict(name=name, data_dir=data_dir, num_tracks=num_tracks,
                                    steps_per_beat=steps_per_beat, lowest_pitch=lowest_pitch))
  config = config_lib.ConfigDict({"data": data})
  return roll_spec(config, sample.tracks_for(config))


def real_windows(config, split: str, num: int) -> np.ndarray:
  """Up to `num` real piano-roll windows of `split` (uint8, onset-marked), in a fixed order."""
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow)
  rolls = []
  for batch in pipeline.eval_batches(config, split, batch_size=min(256, num)):
    rolls.append(batch["pianoroll"][batch["valid"]])
    if sum(len(r) for r in rolls) >= num:
      break
  return np.concatenate(rolls)[:num] if rolls else np.zeros((0,), np.uint8)


def resolve_sampler_priors(config) -> None:
  """Fills, from the training split of a voices config and when not already set,
  model.onset_rates (a row per voice) where its sampler has a metre prior (model.metre_prior
  > 0), model.pickup_shares where it has the pickup prior (model.pickup_prior),
  model.ornament_shares where it has the ornament prior (model.ornament_prior) and
  model.hold_shares where it has the hold prior (model.hold_prior): saved with
  the run's config, so that sampling never needs the data. Reads the split once, every
  excerpt as training crops them; does nothing for other configs."""
  m = config.model
  if not voicegan.is_voice_model(config):
    return
  want_rates = bool(m.get("metre_prior", 0)) and not tuple(m.get("onset_rates", ()))
  want_pickups = bool(m.get("pickup_prior", False)) and not tuple(m.get("pickup_shares", ()))
  want_ornaments = (bool(m.get("ornament_prior", False))
                    and not tuple(m.get("ornament_shares", ())))
  want_holds = bool(m.get("hold_prior", False)) and not tuple(m.get("hold_shares", ()))
  if not (want_rates or want_pickups or want_ornaments or want_holds):
    return
  windows = real_windows(config, config.data.split, 4096)
  if not len(windows):
    return
  layout, steps_per_bar = voicegan.layout_of(config), config_lib.steps_per_bar(config)
  with m.unlocked():
    if want_rates:
      rates = voices_lib.onset_rates(layout, windows, steps_per_bar, per_voice=True)
      m.onset_rates = tuple(round(float(r), 4) for r in rates.reshape(-1))
    if want_pickups:
      shares = voices_lib.pickup_shares(layout, windows, steps_per_bar)
      m.pickup_shares = tuple(round(float(s), 4) for s in shares)
    if want_ornaments:
      shares = voices_lib.ornament_shares(layout, windows)
      m.ornament_shares = tuple(round(float(s), 4) for s in shares)
    if want_holds:
      shares = voices_lib.hold_shares(layout, windows, steps_per_bar,
                                      int(config.data.steps_per_beat))
      m.hold_shares = tuple(round(float(s), 4) for s in shares)


def with_pickup_prior(gen):
  """`gen` (a voices model) sampling with the pickup prior on, its shares measured from the
  run's training split: for runs saved before model.pickup_prior existed."""
  config = gen.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.pickup_prior, config.model.pickup_shares = True, ()
  resolve_sampler_priors(config)
  return with_model_settings(gen, pickup_prior=True,
                             pickup_shares=tuple(config.model.pickup_shares))


def with_model_settings(gen, **settings: Any):
  """`gen` (a voices model) sampling with model.KEY=value for each of `settings`, the same
  weights: e.g. another onset gain or onset rates."""
  config = gen.config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in settings.items():
      config.model[key] = value
  return dataclasses.replace(gen, config=config,
                             engine=voicegan.VoiceModel(config, gen.engine.mesh))


def calibrate_onset_gain(gen, *, split: str = "train", num: int = 64, iterations: int = 3,
                         seed: int = 0, max_gain: float = 4.0,
                         target: Sequence[float] | None = None
                         ) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
  """(model.onset_gain, rows): per-voice factors on the metre prior's chance of a note start
  that bring the notes per bar of `num` free samples up to those of `split` (every excerpt
  of the run's length, one bar apart; or `target`, notes per bar per voice), and one row per
  sampling round (gain, notes per bar).
  Gains stay in [1, max_gain]: the gain adds notes on the bar's strong steps
  (voices.metre_log_prior); a voice a little denser than the data keeps gain 1, as a gain
  below 1 would thin its notes on the beats, not the off-beat ones it has too many of.

  Gibbs sampling at a final temperature below 1 favours the likeliest choice, which inside a
  held note is to hold it: the voices whose next note is least certain (a chorale's alto and
  tenor) come out sparser than the data. Each round moves log(gain) along the slope measured
  between the last two rounds (a first guess before there are two); the round kept is the one
  with the least mean error over the voices."""
  m = gen.engine.model_cfg
  if not voicegan.is_voice_model(gen.config) or not m.metre_prior or not tuple(m.onset_rates):
    raise ValueError("onset_gain acts through the metre prior: calibrate a voices model with "
                     "model.metre_prior > 0 and measured model.onset_rates")
  spec = roll_spec(gen.config, gen.tracks)
  if target is None:
    target = voice_metrics.statistics(voice_metrics.from_rolls(
        split_windows(gen.config, split, hop_bars=1), spec))["notes_per_bar"]
  target = np.asarray(target, np.float64)
  log_gain = np.log(np.asarray(tuple(m.get("onset_gain", ())) or np.ones_like(target)))
  rows, history = [], []
  slope = np.full_like(target, 0.25 * float(m.metre_prior))
  for _ in range(iterations + 1):
    trial = with_model_settings(
        gen, onset_gain=tuple(round(float(g), 3) for g in np.exp(log_gain)))
    rolls = sample.sample(trial, jax.random.PRNGKey(seed), num)
    notes = np.asarray(voice_metrics.statistics(voice_metrics.from_rolls(rolls, spec))
                       ["notes_per_bar"], np.float64)
    rows.append({"gain": trial.config.model.onset_gain,
                 "notes_per_bar": tuple(round(float(x), 3) for x in notes),
                 "target": tuple(round(float(x), 3) for x in target)})
    history.append((log_gain.copy(), np.log(np.maximum(notes, 1e-3))))
    # log(notes) ~ a + slope * log(gain): the slope between the last two rounds where the
    # gain moved enough to measure it over the sampling noise, else 0.25 x the prior's weight
    # (what one chorale model showed); steps of at most x1.6, none within 2 % of the target.
    (g1, n1) = history[-1]
    if len(history) > 1:
      g0, n0 = history[-2]
      moved = np.abs(g1 - g0) > 0.1
      measured = np.clip((n1 - n0) / np.where(moved, g1 - g0, 1.0), 0.05, 1.0)
      slope = np.where(moved, measured, slope)
    error = np.log(target) - n1
    step = np.where(np.abs(error) < 0.02, 0.0, np.clip(error / slope, -0.5, 0.5))
    new_gain = np.clip(log_gain + step, 0.0, np.log(max_gain))
    if np.allclose(new_gain, log_gain):
      break        # every voice within 2 % of the data, or held at a bound: nothing to learn
    log_gain = new_gain
  # The mean error over the voices: a voice already denser than the data keeps gain 1 but
  # grows a little with the others' notes, and must not veto their calibration.
  best = min(rows, key=lambda r: float(np.abs(np.log(np.asarray(r["notes_per_bar"]) / target))
                                       .mean()))
  return best["gain"], rows


def with_interval_weights(gen, weights: Sequence[float]):
  """`gen` sampling with model.interval_weights = `weights`, at its model.interval_prior, or
  at 1 where that is 0 (off): what a calibration of the leaps hands on."""
  prior = float(gen.engine.model_cfg.get("interval_prior", 0.0)) or 1.0
  return with_model_settings(gen, interval_prior=prior,
                             interval_weights=tuple(float(w) for w in weights))


def calibrate_interval_weights(gen, *, split: str = "train", num: int = 256, rounds: int = 2,
                               step: float = 0.5, seed: int = 0, max_weight: float = 3.0
                               ) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
  """(model.interval_weights, rows): per voice, a log-factor per leap size (semitones from
  one note to the next, voices.INTERVAL_BINS) that brings the leaps of `num` free samples to
  those of `split` (every excerpt of the run's length, one bar apart), and one row per
  sampling round (each voice's mean leap, the data's beside it). Read by the sampler at
  `model.interval_prior` (set to 1 if it is 0).

  Cell-wise Gibbs sampling lets a line leap where a step would do: the shipped chorale model's
  bass moved by thirds three times as often as Bach's and by whole steps a third less. Each
  round adds `step` x log(data's share / samples' share) of every leap size, starting from
  the weights the model has (none: its own leaps); a share is counted with one leap added to
  every size, and the weights stay within +-`max_weight`. The last round only measures."""
  m = gen.engine.model_cfg
  if not voicegan.is_voice_model(gen.config):
    raise ValueError("interval weights steer the Gibbs sampler of a voices model "
                     "(model.arch='voices')")
  layout = gen.engine.layout
  sizes = np.arange(voices_lib.INTERVAL_BINS)

  def share(counts):
    return (counts + 1.0) / (counts + 1.0).sum(-1, keepdims=True)

  def mean_leap(counts):
    return tuple(round(float(x), 3)
                 for x in (counts * sizes).sum(-1) / np.maximum(counts.sum(-1), 1))

  data = voices_lib.interval_counts(layout, split_windows(gen.config, split, hop_bars=1))
  weights = np.asarray(tuple(m.get("interval_weights", ())) or np.zeros(data.size),
                       np.float64).reshape(data.shape)
  rows = []
  for r in range(rounds + 1):
    trial = with_interval_weights(gen, (round(float(w), 3) for w in weights.reshape(-1)))
    counts = voices_lib.interval_counts(layout, sample.sample(trial, jax.random.PRNGKey(seed),
                                                              num))
    rows.append({"interval_weights": trial.config.model.interval_weights,
                 "mean_leap": mean_leap(counts), "target": mean_leap(data)})
    if r < rounds:
      weights = np.clip(weights + step * np.log(share(data) / share(counts)), -max_weight,
                        max_weight)
  return rows[-1]["interval_weights"], rows


def syncopation_rates(gen, rolls: np.ndarray) -> np.ndarray:
  """float [V]: per voice, the share of the beats it sounds on (and on the step before) that
  hold a note begun off the beat (voices.syncopations), in uint8 rolls."""
  spb = int(gen.config.data.steps_per_beat)
  classes, restrike = voices_lib.classes_from_roll(gen.engine.layout, jnp.asarray(rolls))
  events = np.asarray(voices_lib.syncopations(classes, restrike, spb))
  before, _ = voices_lib.neighbours(classes, voices_lib.REST)
  classes, before = np.asarray(classes), np.asarray(before)
  beat = (np.arange(classes.shape[1]) % spb == 0)[None, :, None]
  sounding = beat & (classes != voices_lib.REST) & (before != voices_lib.REST)
  return events.sum((0, 1)) / np.maximum(sounding.sum((0, 1)), 1)


def calibrate_syncopation_weights(gen, *, split: str = "train", num: int = 256,
                                  rounds: int = 3, step: float = 1.0, seed: int = 0,
                                  max_weight: float = 6.0
                                  ) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
  """(model.syncopation_weights, rows): per voice, the log-factor on each note begun off a beat
  and held over the next one that brings the rate of those notes in `num` free samples
  (`syncopation_rates`) to that of `split` (every excerpt of the run's length, one bar apart),
  and one row per sampling round (weights, rates, the data's). Each round adds `step` x
  log(data's rate / samples' rate), starting from the model's weights (none: 0); the weights
  stay within +-`max_weight`; the round kept is the one nearest the data (mean |log ratio|
  over the voices).

  The metre prior places note starts in the bar but cannot see how long a note lasts: the
  shipped chorale network held 36 % of its soprano's off-beat notes over the next beat, Bach
  9 %, and so started a fifth fewer of its notes on a beat."""
  m = gen.engine.model_cfg
  if not voicegan.is_voice_model(gen.config):
    raise ValueError("syncopation weights steer the Gibbs sampler of a voices model "
                     "(model.arch='voices')")
  data = syncopation_rates(gen, split_windows(gen.config, split, hop_bars=1))
  weights = np.asarray(tuple(m.get("syncopation_weights", ())) or np.zeros_like(data))
  rows = []
  for r in range(rounds + 1):
    trial = with_model_settings(
        gen, syncopation_weights=tuple(round(float(w), 3) for w in weights))
    rates = syncopation_rates(trial, sample.sample(trial, jax.random.PRNGKey(seed), num))
    rows.append({"syncopation_weights": trial.config.model.syncopation_weights,
                 "rates": tuple(round(float(x), 4) for x in rates),
                 "target": tuple(round(float(x), 4) for x in data)})
    if r < rounds:
      ratio = np.log(np.maximum(data, 1e-4) / np.maximum(rates, 1e-4))
      weights = np.clip(weights + step * ratio, -max_weight, max_weight)
  best = min(rows, key=lambda row: float(np.abs(np.log(
      np.maximum(np.asarray(row["rates"]), 1e-4) / np.maximum(data, 1e-4))).mean()))
  return best["syncopation_weights"], rows


def held_chord_rate(gen, rolls: np.ndarray) -> float:
  """Held chords (voices.hold_shares: every voice sounding, none starting a note, for two beats
  or more, starting on a beat) per bar of uint8 rolls."""
  shares = voices_lib.hold_shares(gen.engine.layout, rolls, config_lib.steps_per_bar(gen.config),
                                  int(gen.config.data.steps_per_beat))
  return float(shares[1:].sum())


def calibrate_hold_shares(gen, *, split: str = "train", num: int = 256, rounds: int = 2,
                          seed: int = 0, max_scale: float = 2.0, target: float | None = None
                          ) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
  """(model.hold_shares, rows): the hold prior's shares (`gen`'s, or measured on the training
  split) with the chance of a planned held chord scaled so that `num` free samples hold as many
  chords per bar as `split`'s excerpts (or `target` per bar), and one row per sampling round
  (scale, rate, the data's). The
  network holds some chords by itself (the shipped chorale model one in 12 bars), so the plan
  needs fewer than the data has. Each round multiplies the scale by the data's rate over the
  samples', within [0, `max_scale`] and so that the shares stay a distribution; the round
  kept is the one nearest the data."""
  m = gen.engine.model_cfg
  if not voicegan.is_voice_model(gen.config):
    raise ValueError("the hold prior steers the Gibbs sampler of a voices model "
                     "(model.arch='voices')")
  base = tuple(m.get("hold_shares", ()))
  if not base:   # where the plan puts held chords: always the training split's
    base = voices_lib.hold_shares(gen.engine.layout,
                                  split_windows(gen.config, "train", hop_bars=1),
                                  config_lib.steps_per_bar(gen.config),
                                  int(gen.config.data.steps_per_beat))
  if target is None:
    target = held_chord_rate(gen, split_windows(gen.config, split, hop_bars=1))
  base = np.asarray(base, np.float64)
  data = float(target)
  scale, rows = 1.0, []
  for r in range(rounds + 1):
    shares = np.concatenate([[0.0], base[1:] * scale])
    shares[0] = 1.0 - shares[1:].sum()
    trial = with_model_settings(gen, hold_prior=True,
                                hold_shares=tuple(round(float(x), 4) for x in shares))
    rate = held_chord_rate(trial, sample.sample(trial, jax.random.PRNGKey(seed), num))
    rows.append({"scale": round(scale, 4), "hold_shares": trial.config.model.hold_shares,
                 "rate": round(rate, 4), "target": round(data, 4)})
    if r < rounds:
      cap = min(max_scale, 1.0 / max(base[1:].sum(), 1e-9))
      scale = float(np.clip(scale * data / max(rate, 1e-4), 0.0, cap))
  best = min(rows, key=lambda row: abs(np.log(max(row["rate"], 1e-4) / max(data, 1e-4))))
  return best["hold_shares"], rows


def calibrate_sampler(gen, *, log: Callable[[str], Any] = print, seed: int = 0,
                      hold_split: str = "train"):
  """`gen` (a voices model) with its sampler's weights calibrated on the training split, in
  turn: the share of held chords (model.hold_shares, with the hold prior on; toward
  `hold_split`'s rate: the chorales' training split holds more than the held-out ones), leap sizes
  (model.interval_weights), notes tied over a beat (model.syncopation_weights), then the note
  density (model.onset_gain), which the others move. `log` gets one line per sampling round.
  What `jaxgan export --calibrate` ships; about 25 minutes of a 2-core CPU for the chorale
  model."""
  if gen.engine.model_cfg.get("hold_prior", False):
    shares, rows = calibrate_hold_shares(gen, split=hold_split, seed=seed)
    for i, row in enumerate(rows):
      log(f"held chords round {i}: scale {row['scale']}, held chords per bar {row['rate']} "
          f"({hold_split} split: {row['target']})")
    gen = with_model_settings(gen, hold_shares=shares)
  weights, rows = calibrate_interval_weights(gen, seed=seed)
  for i, row in enumerate(rows):
    log(f"leaps round {i}: mean leap per voice {row['mean_leap']} (training split: "
        f"{row['target']})")
  gen = with_interval_weights(gen, weights)
  weights, rows = calibrate_syncopation_weights(gen, seed=seed)
  for i, row in enumerate(rows):
    log(f"syncopations round {i}: weights {row['syncopation_weights']}, beats tied over per "
        f"voice {row['rates']} (training split: {row['target']})")
  gen = with_model_settings(gen, syncopation_weights=weights)
  gain, rows = calibrate_onset_gain(gen, seed=seed)
  for i, row in enumerate(rows):
    log(f"note density round {i}: gain {row['gain']}, notes per bar {row['notes_per_bar']}"
        f" (training split: {row['target']})")
  return with_model_settings(gen, onset_gain=gain)


def _merged(rolls, spec) -> dict[str, np.ndarray]:
  out = dict(metrics_lib.track_metrics(rolls, spec))
  out.update(metrics_lib.pair_metrics(rolls, spec))
  return out


def evaluate(gen, *, split: str = "test", num: int = 256, seed: int = 0) -> dict[str, Any]:
  """Metrics of `num` EMA samples vs `num` real windows of `split`, and set-level OA/KL.

  A voices model (model.arch="voices") gets `evaluate_voices` instead.
  """
  if gen.is_voice_model:
    return evaluate_voices(gen, split=split, num=num, seed=seed)
  spec = roll_spec(gen.config, gen.tracks)
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
  """The result without its table as JSON at `path` (local or gs://)."""
  path = paths.resolve(path)
  paths.makedirs(paths.dirname(path))
  paths.write_atomic(path, json.dumps({k: v for k, v in result.items() if k != "table"},
                                      indent=2, default=lambda x: None if x != x else float(x)))


# --------------------------------------------------------------------------------------------
# Voices models: the chorale measures (jaxgan/voice_metrics.py) on a held-out split.


def split_windows(config, split: str, *, bars: int | None = None,
                  hop_bars: int | None = None) -> np.ndarray:
  """Every window of `bars` bars (default: the run's) of `split`, in order, starting every
  `hop_bars` bars (default: `bars`, windows that do not overlap)."""
  config = config.copy_and_resolve_references()
  config.data.n_bars = bars or config.data.n_bars
  config.data.hop_bars = hop_bars or config.data.n_bars
  return real_windows(config, split, 10 ** 6)


def fill_windows(gen, windows: np.ndarray, known: np.ndarray, key: jax.Array, *,
                 batch: int = 64, temperature: float | tuple[float, float] | None = None
                 ) -> np.ndarray:
  """uint8 rolls: `windows` with the cells not `known` (bool [N, T, tracks]) redrawn by the
  voices model's Gibbs sampler; known cells come back unchanged."""
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


def restoration_fill(gen, windows: np.ndarray, *, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(hidden bool [N, T, tracks], uint8 rolls): the restoration task of `jaxgan eval --seed
  SEED`, 2 consecutive bars of every voice hidden at a random position of each window (never
  the first bar), filled by the voices model. Scripts that set baselines beside it
  (scripts/restoration_baselines.py) use the same hidden bars."""
  n, bars, steps, _, tracks = windows.shape
  hidden = voice_metrics.bar_span_mask(n, bars, steps, tracks, span=2, seed=seed, first=1)
  filled = fill_windows(gen, windows, ~hidden, jax.random.fold_in(jax.random.PRNGKey(seed), 1))
  return hidden, filled


def evaluate_voices(gen, *, split: str = "test", num: int = 64, seed: int = 0,
                    restoration: bool = True, accompaniment: bool = True) -> dict[str, Any]:
  """The chorale figures of a voices model against the held-out `split`:

  - "report": `num` free samples of the run's window length vs every excerpt of that length
    of the split, one bar apart, as training crops them (voice_metrics.report: statistics,
    overlapping areas, voice leading, targets); "report_first_windows": the same samples vs the
    windows that do not overlap, each chorale's first starting at its first step (half of
    them hold its pickup's rests, which a crop at a random bar seldom does);
  - "nll": NLL per hidden voice cell (nats) under each mask kind (voicegan.MASK_KINDS);
  - "restoration": 2 consecutive bars hidden in every voice at a random position of each
    window (never the first bar), filled by the model, beside the baselines;
  - "accompaniment": soprano given, alto/tenor/bass generated.
  Onsets are compared at pitch changes: the standard split cannot mark repeated notes.
  """
  spec = roll_spec(gen.config, gen.tracks)
  key = jax.random.PRNGKey(seed)
  real = split_windows(gen.config, split)
  generated = sample.sample(gen, key, num)
  result: dict[str, Any] = {"step": gen.step, "split": split, "num_generated": int(num),
                            "num_real": int(len(real))}
  if not len(real):
    result["table"] = f"no {split} windows: nothing to compare with"
    return result
  excerpts = split_windows(gen.config, split, hop_bars=1)
  report = voice_metrics.report(generated, excerpts, spec=spec, onsets_at_changes=True,
                                seed=seed)
  result["report"] = {k: v for k, v in report.items() if k != "table"}
  first = voice_metrics.report(generated, real, spec=spec, onsets_at_changes=True, seed=seed)
  result["report_first_windows"] = {k: v for k, v in first.items() if k != "table"}
  tables = [f"free samples ({num}) vs {len(excerpts)} {split} excerpts of Bach, one bar "
            "apart:", report["table"],
            f"against the {len(real)} windows that do not overlap: {first['passed']} of "
            f"{first['total']} figures within target"]
  nll = voicegan.heldout_nll(gen.engine, gen.variables["params"], real, seed=seed)
  result["nll"] = nll
  tables.append("NLL per hidden voice cell (nats), mask kinds: " + ", ".join(
      f"{k.split('/')[-1]} {v:.3f}" for k, v in nll.items()))
  truth = voice_metrics.from_rolls(real, spec)
  n, bars, steps, _, tracks = real.shape
  if restoration and bars >= 3:
    hidden, filled = restoration_fill(gen, real, seed=seed)
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


# --------------------------------------------------------------------------------------------
# During training: the periodic evaluation and the best checkpoint.


@dataclasses.dataclass(frozen=True)
class DataReference:
  """What the default evaluation compares samples with, computed once per run: the real
  windows' per-track metrics and per-window song features."""

  track: dict[str, np.ndarray]
  features: dict[str, np.ndarray]


def data_reference(config, windows: np.ndarray) -> DataReference:
  spec = run_spec(config)
  return DataReference(track=metrics_lib.track_metrics(windows, spec),
                       features=metrics_lib.song_features(windows, spec))


def sample_metrics(engine, state: dict, reference: DataReference | None = None
                   ) -> dict[str, float]:
  """The default periodic evaluation: MuseGAN metrics of EMA samples, one scalar per track;
  with a `reference` of real windows also how far they are from the data: eval/gap/<metric>
  (relative difference, the data's value floored at 0.1, averaged over tracks; eval/gap/mean
  over metrics) and the set-level overlapping area eval/oa/<feature> (eval/oa/mean; 1 = the
  same).
  """
  rolls = np.asarray(jax.device_get(
      engine.sample_ema(state, jax.random.PRNGKey(0), engine.config.train.eval_num)))
  spec = run_spec(engine.config)
  out = {}
  generated = metrics_lib.track_metrics(rolls, spec)
  for name, values in generated.items():
    for i, v in enumerate(np.asarray(values, float)):
      if np.isfinite(v):
        out[f"eval/{name}/track{i}"] = float(v)
  if reference is None:
    return out
  gaps = []
  for name, values in generated.items():
    g, r = np.asarray(values, float), np.asarray(reference.track[name], float)
    ok = np.isfinite(g) & np.isfinite(r)
    if ok.any():
      # Relative to the data's value, floored so that a metric the data has at ~0 (EB of
      # full chorales) does not swamp the rest.
      gap = float(np.mean(np.abs(g[ok] - r[ok]) / np.maximum(np.abs(r[ok]), 0.1)))
      out[f"eval/gap/{name}"] = gap
      gaps.append(gap)
  if gaps:
    out["eval/gap/mean"] = float(np.mean(gaps))
  areas = []
  for name, row in metrics_lib.compare_sets(metrics_lib.song_features(rolls, spec),
                                            reference.features).items():
    if np.isfinite(row["OA"]):
      out[f"eval/oa/{name}"] = float(row["OA"])
      areas.append(float(row["OA"]))
  if areas:
    out["eval/oa/mean"] = float(np.mean(areas))
  return out


class BestKeeper:
  """Keeps the checkpoint with the best value of one eval scalar in WORKDIR/best, with
  best.json saying which step and value; survives restarts.

  Process 0 reads and writes best.json and decides what is best; the other processes of a
  multi-host run follow its decisions (they may not see the same file, and must save the same
  checkpoints), and a failure of its reads or writes ends every process together.
  """

  def __init__(self, workdir: str, metric: str, mode: str):
    self.metric, self.mode = metric, mode
    self.json_path = workdir_lib.best_info(workdir)
    self.is_lead = jax.process_index() == 0
    self.value = distributed.agreed(self._read_value)
    self.checkpointer = ckpt_lib.Checkpointer(workdir_lib.checkpoints(workdir, best=True),
                                              every=1, keep=1, clean_tmp=True)

  def _read_value(self) -> float | None:
    if not self.is_lead or not paths.exists(self.json_path):
      return None
    try:
      return json.loads(paths.read_text(self.json_path)).get("value")
    except (ValueError, AttributeError) as e:
      raise config_lib.ConfigError(
          f"{self.json_path} is not a best-checkpoint record ({type(e).__name__}: {e}); "
          "delete it (and best/checkpoints) to keep the best from now on") from None

  def better(self, value: float) -> bool:
    if not np.isfinite(value):
      return False
    if self.value is None:
      return True
    return value > self.value if self.mode == "max" else value < self.value

  def offer(self, step: int, state: dict, scalars: dict[str, float]) -> bool:
    if self.metric not in scalars:
      raise config_lib.ConfigError(
          f"train.best_metric={self.metric!r} is not among the eval scalars: "
          f"{', '.join(sorted(scalars))}")
    value = float(scalars[self.metric])
    if not distributed.from_lead(self.better(value)):
      return False
    self.checkpointer.save(step, state, force=True)
    self.checkpointer.wait()
    self.value = value
    distributed.agreed(self._write_value, step, value)
    log.info("step %d: best %s so far (%.4g), kept in %s", step, self.metric, value,
             paths.dirname(self.json_path))
    return True

  def _write_value(self, step: int, value: float) -> None:
    if self.is_lead:
      try:
        paths.makedirs(paths.dirname(self.json_path))   # Orbax may keep the folder elsewhere
        paths.write_atomic(self.json_path, json.dumps(
            {"step": int(step), "metric": self.metric, "value": value}))
      except OSError as e:
        raise errors.WriteError("the best checkpoint's record", self.json_path,
                                errors.reason_of(e)) from None

  def close(self) -> None:
    self.checkpointer.close()


def eval_windows(config) -> np.ndarray | None:
  """Real windows of the eval split for the default evaluation (None when there are none)."""
  try:
    real = real_windows(config, config.data.eval_split, config.train.eval_num)
  except Exception as e:  # no such split in this data set: evaluate without the data
    log.warning("no %s windows for evaluation (%s); eval/gap and eval/oa are off",
                config.data.eval_split, e)
    return None
  return real if len(real) else None




def periodic_evaluation(config) -> Callable:
  """The periodic evaluation of a config: voices' or MuseGAN metrics against the data."""
  windows = eval_windows(config)
  if voicegan.is_voice_model(config):
    return voice_evaluation(config, windows)
  reference = data_reference(config, windows) if windows is not None else None
  return functools.partial(sample_metrics, reference=reference)


def voice_evaluation(config, windows: np.ndarray | None) -> Callable[[Any, dict], dict]:
  """The periodic evaluation of a voices run: per voice the rest share and notes per bar of
  EMA samples (beside the data's), and the held-out NLL per hidden cell of four masks."""
  spec = run_spec(config)
  reference = None
  if windows is not None and len(windows):
    reference = voice_metrics.statistics(voice_metrics.from_rolls(np.asarray(windows), spec))

  def evaluate(engine, state: dict) -> dict[str, float]:
    num = min(int(config.train.eval_num), 64)
    rolls = np.asarray(jax.device_get(engine.sample_ema(state, jax.random.PRNGKey(0), num)))
    stats = voice_metrics.statistics(voice_metrics.from_rolls(rolls, spec))
    out = {}
    for name in ("rest_share", "notes_per_bar", "pitches_per_step"):
      for v, value in enumerate(np.asarray(stats[name], float)):
        if np.isfinite(value):
          out[f"eval/{name}/voice{v}"] = float(value)
      if reference is not None and name != "pitches_per_step":
        gen, ref = np.asarray(stats[name], float), np.asarray(reference[name], float)
        ok = np.isfinite(gen) & np.isfinite(ref)
        if ok.any():
          out[f"eval/gap/{name}"] = float(np.mean(np.abs(gen[ok] - ref[ok])
                                                  / np.maximum(np.abs(ref[ok]), 0.05)))
    if windows is not None and len(windows):
      out.update(voicegan.heldout_nll(engine, state["g_ema"], windows))
    return out

  return evaluate
