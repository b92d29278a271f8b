"""The voices model (jaxgan/voicegan.py): training masks, one pitch per voice in every sample,
fills that keep what is given, learning, generator export and the shipped chorale model."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import cli
from jaxgan import config as config_lib
from jaxgan import sample as sample_lib
from jaxgan import sharding, voice_metrics, voicegan
from jaxgan.models import voices as voices_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_voices.py")
CHORALE = os.path.join(ROOT, "configs", "jsb_chorale.py")


def tiny(*overrides: str):
  return config_lib.load_config(TINY, list(overrides))


@pytest.fixture(scope="module")
def engine_state():
  engine = voicegan.VoiceEngine(tiny(), sharding.make_mesh(devices=jax.devices()[:1]))
  return engine, engine.init(jax.random.PRNGKey(0))


# --- masks ---------------------------------------------------------------------------------


def _only(kind: str) -> list[float]:
  return [1.0 if k == kind else 0.0 for k in voicegan.MASK_KINDS]


def test_each_mask_kind_hides_what_it_says():
  num, bars, steps, tracks = 256, 4, 8, 3
  key = jax.random.PRNGKey(3)
  known = {k: np.asarray(voicegan.draw_known(key, num, bars, steps, tracks, _only(k)))
           for k in voicegan.MASK_KINDS}
  assert not known["all"].any()
  # bars: 1 .. bars // 2 whole bars hidden in every track, one span, never the whole window
  by_bar = known["bars"].reshape(num, bars, steps, tracks)
  assert (by_bar == by_bar[:, :, :1, :1]).all()
  hidden_bars = ~by_bar[:, :, 0, 0]
  counts = hidden_bars.sum(1)
  assert counts.min() == 1 and counts.max() == bars // 2
  for row in hidden_bars:
    idx = np.flatnonzero(row)
    assert (np.diff(idx) == 1).all()
  # voices: whole tracks, some hidden and some given in every example
  per_track = known["voices"]
  assert (per_track == per_track[:, :1]).all()
  hidden_tracks = ~per_track[:, 0]
  assert hidden_tracks.any(1).all() and (~hidden_tracks).any(1).all()
  # cells: each example its own rate, from almost nothing to almost everything hidden
  share = 1 - known["cells"].mean((1, 2))
  assert share.min() < 0.15 and share.max() > 0.85 and share.std() > 0.2


def test_mask_kinds_come_in_their_shares():
  known = np.asarray(voicegan.draw_known(jax.random.PRNGKey(0), 4000, 4, 8, 2,
                                         (0.0, 0.0, 0.75, 0.25)))
  all_hidden = (~known).all((1, 2)).mean()
  assert abs(all_hidden - 0.25) < 0.03


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("--config.data.mono_tracks=()", "data.mono_tracks"),
    ("--config.loss.mask_shares=(1.0, 0.0)", "loss.mask_shares"),
    ("--config.model.gibbs_pmax=1.5", "model.gibbs_pmax"),
    ("--config.model.temperature=0.0", "model.temperature"),
    ("--config.model.voice_leading_penalty=-1.0", "model.voice_leading_penalty"),
    ("--config.conditioning.infill=0.5", "conditioning.infill"),
    ("--config.loss.critic_input=logits", "loss.critic_input"),
    ("--config.model.features=6", "model.rotary"),   # 3 per head: rotary pairs need even
    ("--config.model.metre_prior=-0.5", "model.metre_prior"),
    ("--config.model.onset_rates=(0.5, 0.5)", "model.onset_rates"),   # not one per step
    ("--config.model.onset_gain=(1.5,)", "model.onset_gain"),          # not one per voice
    ("--config.model.onset_gain=(1.5, 0.0)", "model.onset_gain"),
    ("--config.model.join_short_notes=(True,)", "model.join_short_notes"),  # one per voice
    ("--config.model.join_short_notes=(1, 0)", "model.join_short_notes"),
    ("--config.model.interval_prior=-1.0", "model.interval_prior"),
    ("--config.model.interval_weights=(0.5, 0.5)", "model.interval_weights"),  # 14 per voice
    ("--config.model.pickup_shares=(1.0,)", "model.pickup_shares"),          # one per step
    (f"--config.model.pickup_shares={tuple([0.5] * 8)!r}", "model.pickup_shares"),  # sum 4
    ("--config.model.ornament_shares=(0.5, 0.5)", "model.ornament_shares"),  # 2 ** 2 sets
    ("--config.model.ornament_shares=(0.5, 0.5, 0.5, 0.5)", "model.ornament_shares"),  # sum 2
    ("--config.model.syncopation_weights=(-1.0,)", "model.syncopation_weights"),  # per voice
    ("--config.model.syncopation_weights=(-1.0, -50.0)", "model.syncopation_weights"),
    ("--config.model.hold_shares=(0.5, 0.5)", "model.hold_shares"),   # 1 + 3 per beat
    (f"--config.model.hold_shares={tuple([0.5] * 13)!r}", "model.hold_shares"),  # sum 6.5
])
def test_bad_voices_config_fails_naming_the_key(override, key):
  with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
    tiny(override)


def test_onset_rates_may_hold_a_row_per_voice():
  steps = 8                                   # tiny: 8 steps per bar, 2 voices
  config = tiny(f"--config.model.onset_rates={tuple([0.5] * steps * 2)!r}")
  assert voicegan.onset_rates_table(config.model.onset_rates, steps).shape == (2, steps)
  shared = tiny(f"--config.model.onset_rates={tuple([0.5] * steps)!r}")
  assert voicegan.onset_rates_table(shared.model.onset_rates, steps).shape == (steps,)


def test_unknown_model_key_is_refused():
  config = tiny()
  config.model.unlock()
  config.model.chanels = 3
  with pytest.raises(config_lib.ConfigError, match="chanels"):
    config_lib.validate(config)


def test_runs_saved_before_the_position_switches_load_without_them(tmp_path):
  config = tiny()
  assert config.model.rotary and config.model.local_conv   # what new runs train with
  saved = json.loads(config.to_json_best_effort())
  del saved["model"]["rotary"], saved["model"]["local_conv"], saved["model"]["metre_prior"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  old = config_lib.load_run_config(str(tmp_path))
  assert old.model.rotary is False and old.model.local_conv is False
  assert old.model.metre_prior == 0.0   # sampled without the prior when it was measured
  engine = voicegan.VoiceModel(old, sharding.make_mesh(devices=jax.devices()[:1]))
  params = engine.abstract_generator()["g_ema"]
  assert "conv" not in params["trunk"]["block0"]   # the parameters such a run saved


# --- sampling --------------------------------------------------------------------------------


def _voice_columns(engine, rolls):
  lo = engine.config.data.lowest_pitch
  for v, (t, (low, high)) in enumerate(zip(engine.layout.tracks, engine.layout.ranges)):
    col = np.asarray(rolls)[..., t] > 0
    yield v, col, lo + low, lo + high


def test_every_voice_sings_one_pitch_at_a_time_in_every_sample(engine_state):
  engine, state = engine_state
  for seed in range(4):
    key = jax.random.PRNGKey(seed)
    rolls = engine.sample_ema(state, key, 16)
    assert rolls.shape == (16,) + engine.data_shape
    for _, col, _, _ in _voice_columns(engine, rolls):
      assert col.sum(-1).max() <= 1
  # Longer pieces than the training window (the model reads any length).
  gen = sample_lib.Generator(config=engine.config, engine=engine, variables={
      "params": state["g_ema"], "batch_stats": {}}, step=0,
      tracks=sample_lib.tracks_for(engine.config))
  long = sample_lib.sample(gen, jax.random.PRNGKey(9), 4, bars=5)
  assert long.shape[:2] == (4, 5)
  for _, col, _, _ in _voice_columns(engine, long):
    assert col.sum(-1).max() <= 1


def test_metre_prior_puts_note_starts_where_its_rates_say(engine_state):
  engine, state = engine_state
  steps = engine.steps
  rates = tuple([0.9] + [0.002] * (steps - 1))       # notes start on bar lines only
  starts = {}
  for weight in (0.0, 8.0):
    config = tiny(f"--config.model.metre_prior={weight}", "--config.model.gibbs_rounds=24",
                  f"--config.model.onset_rates={rates!r}")
    model = voicegan.VoiceModel(config, engine.mesh)
    z = jax.random.normal(jax.random.PRNGKey(0), [32, model.latent_size])
    rolls = jax.jit(model.gibbs)(state["g_ema"], z, jax.random.PRNGKey(1))
    classes, restrike = voices_lib.classes_from_roll(model.layout, rolls)
    classes, restrike = np.asarray(classes), np.asarray(restrike)
    before = np.concatenate([np.full_like(classes[:, :1], -1), classes[:, :-1]], 1)
    start = (classes != voices_lib.REST) & ((classes != before) | restrike)
    on_bar_line = (np.arange(classes.shape[1]) % steps == 0)[None, :, None]
    starts[weight] = (start & on_bar_line).sum() / max(start.sum(), 1)
  assert starts[8.0] > 0.6 and starts[8.0] > 3 * starts[0.0], starts


def test_per_voice_rates_put_each_voice_s_starts_where_its_row_says(engine_state):
  engine, state = engine_state
  steps = engine.steps
  on_bar_line = [0.9] + [0.002] * (steps - 1)
  mid_bar = [0.002] * (steps // 2) + [0.9] + [0.002] * (steps // 2 - 1)
  position = np.arange(engine.data_shape[0] * steps) % steps

  def shares(rows):
    """Per voice, the share of its note starts at the bar line and at mid-bar."""
    config = tiny("--config.model.metre_prior=8.0", "--config.model.gibbs_rounds=24",
                  f"--config.model.onset_rates={tuple(rows)!r}")
    model = voicegan.VoiceModel(config, engine.mesh)
    z = jax.random.normal(jax.random.PRNGKey(0), [32, model.latent_size])
    rolls = jax.jit(model.gibbs)(state["g_ema"], z, jax.random.PRNGKey(1))
    classes, restrike = (np.asarray(x) for x in voices_lib.classes_from_roll(model.layout,
                                                                            rolls))
    before = np.concatenate([np.full_like(classes[:, :1], -1), classes[:, :-1]], 1)
    start = (classes != voices_lib.REST) & ((classes != before) | restrike)
    start[:, 0] = False        # every voice's first note starts the piece, where it may
    total = np.maximum(start.sum((0, 1)), 1)
    return (start[:, position == 0].sum((0, 1)) / total,
            start[:, position == steps // 2].sum((0, 1)) / total)

  bar_line, middle = shares(on_bar_line + mid_bar)
  swapped_bar_line, swapped_middle = shares(mid_bar + on_bar_line)
  # Voice 0 starts its notes on bar lines, voice 1 in the middle of the bar, and swapping the
  # rows swaps where.
  assert bar_line[0] > 0.4 and bar_line[0] > 2 * swapped_bar_line[0], (bar_line, swapped_bar_line)
  assert middle[1] > 0.4 and middle[1] > 2 * swapped_middle[1], (middle, swapped_middle)


def test_calibrating_the_onset_gain_moves_density_toward_the_data(engine_state):
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  engine, state = engine_state
  steps = engine.steps
  config = tiny(f"--config.model.onset_rates={tuple([0.3] * steps)!r}",
                "--config.model.gibbs_rounds=8")
  gen = sample_lib.Generator(config=config, engine=voicegan.VoiceModel(config, engine.mesh),
                             variables={"params": state["g_ema"], "batch_stats": {}}, step=0,
                             tracks=sample_lib.tracks_for(config))
  _, rows = evaluate.calibrate_onset_gain(gen, num=16, iterations=0)
  assert len(rows) == 1 and rows[0]["gain"] == (1.0, 1.0)
  # The training split's density by default; here voice 0 should sing 1.5x what it does, and
  # voice 1 0.7x: a gain only adds notes, so voice 1 keeps gain 1.
  density = np.asarray(rows[0]["notes_per_bar"])
  np.testing.assert_allclose(rows[0]["target"], voice_metrics.statistics(voice_metrics.from_rolls(
      evaluate.split_windows(config, "train", hop_bars=1),
      evaluate.roll_spec(config, gen.tracks)))["notes_per_bar"], atol=1e-3)
  target = density * np.asarray([1.5, 0.7])
  gain, rows = evaluate.calibrate_onset_gain(gen, num=16, iterations=2, target=target)
  assert len(rows) == 3 and len(gain) == engine.layout.num_voices
  # Where no voice can move (one on target, one too dense at gain 1), it stops after a round.
  _, still = evaluate.calibrate_onset_gain(gen, num=16, iterations=2,
                                           target=density * np.asarray([1.0, 0.7]))
  assert len(still) == 1
  assert gain[0] > 1.0 and all(r["gain"][1] == 1.0 for r in rows), rows
  denser = [r["notes_per_bar"][0] for r in rows]
  assert max(denser[1:]) > denser[0], rows
  error = [np.abs(np.log(np.asarray(r["notes_per_bar"]) / target)).mean() for r in rows]
  assert tuple(gain) == rows[int(np.argmin(error))]["gain"]
  with pytest.raises(ValueError, match="metre prior"):
    evaluate.calibrate_onset_gain(sample_lib.Generator(
        config=tiny(), engine=engine, variables=gen.variables, step=0, tracks=gen.tracks))


def test_calibrating_the_leaps_moves_them_toward_the_data(engine_state):
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  engine, state = engine_state
  config = tiny("--config.model.gibbs_rounds=8")
  gen = sample_lib.Generator(config=config, engine=voicegan.VoiceModel(config, engine.mesh),
                             variables={"params": state["g_ema"], "batch_stats": {}}, step=0,
                             tracks=sample_lib.tracks_for(config))
  weights, rows = evaluate.calibrate_interval_weights(gen, num=32, rounds=2, step=1.0)
  assert len(rows) == 3 and len(weights) == engine.layout.num_voices * voices_lib.INTERVAL_BINS
  assert rows[0]["interval_weights"] == (0.0,) * len(weights)
  assert rows[-1]["interval_weights"] == weights and max(abs(w) for w in weights) <= 3.0
  # The untrained model leaps at random across each voice's range, far more than the data:
  # the weights pull every voice's mean leap toward the data's.
  target = np.asarray(rows[0]["target"])
  first, last = (np.abs(np.asarray(r["mean_leap"]) - target) for r in (rows[0], rows[-1]))
  assert (first > 1.0).all() and (last < first - 1.0).all(), rows
  with pytest.raises(config_lib.ConfigError, match="interval_weights"):
    tiny(f"--config.model.interval_weights={tuple(weights[:-1])!r}")


def test_calibrating_the_hold_shares_moves_held_chords_toward_the_data(engine_state):
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  engine, state = engine_state
  shares = [0.0] * 13
  shares[0], shares[1], shares[7] = 0.4, 0.3, 0.3   # beat 0 or beat 2, for 2 beats
  config = tiny("--config.model.gibbs_rounds=4", "--config.model.hold_prior=True",
                f"--config.model.hold_shares={tuple(shares)!r}")
  gen = sample_lib.Generator(config=config, engine=voicegan.VoiceModel(config, engine.mesh),
                             variables={"params": state["g_ema"], "batch_stats": {}}, step=0,
                             tracks=sample_lib.tracks_for(config))
  # The untrained network holds hardly a chord by itself: what it holds is the plan's.
  plain = evaluate.with_model_settings(gen, hold_prior=False)
  assert evaluate.held_chord_rate(plain, sample_lib.sample(plain, jax.random.PRNGKey(0), 64)) < 0.1
  calibrated, rows = evaluate.calibrate_hold_shares(gen, num=64, rounds=2, target=0.3)
  assert len(rows) == 3 and rows[0]["scale"] == 1.0 and rows[0]["rate"] > 0.45
  # The plan's chance falls toward the target's, one scale for every kind of chord, and the
  # round kept is the one nearest the target.
  scale = calibrated[1] / 0.3
  assert 0.3 < scale < 0.8 and calibrated[7] == pytest.approx(0.3 * scale, abs=2e-4)
  assert calibrated[0] == pytest.approx(1 - sum(calibrated[1:]), abs=1e-3)
  gaps = [abs(np.log(r["rate"] / 0.3)) for r in rows]
  kept = next(r for r in rows if tuple(r["hold_shares"]) == tuple(calibrated))
  assert abs(np.log(kept["rate"] / 0.3)) == min(gaps) < 0.25, rows
  # Without a target, the rate to match is the named split's; the plan stays gen's.
  for split in ("train", "validation"):
    kept, rows = evaluate.calibrate_hold_shares(gen, num=16, rounds=0, split=split)
    data = evaluate.held_chord_rate(gen, evaluate.split_windows(config, split, hop_bars=1))
    assert rows[0]["target"] == pytest.approx(data, abs=1e-4) and kept == tuple(shares)


def _random_condition(engine, num: int, seed: int, *, given: float, restrikes: float,
                      rests: bool):
  """(classes, roll, known, z): random voices over the engine's window, `given` of the cells
  known, `restrikes` of the cells struck again, rests among the classes or not."""
  layout = engine.layout
  bars, steps, pitches, tracks = engine.data_shape
  key = jax.random.PRNGKey(seed)
  classes = jax.random.randint(key, (num, bars * steps, layout.num_voices), 0 if rests else 1,
                               layout.num_classes)
  strike = jax.random.bernoulli(jax.random.fold_in(key, 1), restrikes, classes.shape)
  roll = voices_lib.roll_from_classes(layout, classes, strike,
                                      (num, bars, steps, pitches, tracks))
  known = jax.random.bernoulli(jax.random.fold_in(key, 2), given, (num, bars, steps, tracks))
  return classes, roll, known, jax.random.normal(key, (num, engine.latent_size))


def test_a_fill_keeps_every_given_cell(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b, (bars, steps, _, tracks) = 8, engine.data_shape
  key = jax.random.PRNGKey(1)
  _, roll, known, z = _random_condition(engine, b, 1, given=0.5, restrikes=0.3, rests=True)
  filled = engine.fill_jit(state["g"], z, key, {"context": roll, "known": known},
                           jnp.float32(1.0))
  got, got_strike = voices_lib.classes_from_roll(layout, filled)
  want, want_strike = voices_lib.classes_from_roll(layout, roll)
  given = np.asarray(known).reshape(b, bars * steps, tracks)[..., list(layout.tracks)]
  np.testing.assert_array_equal(np.asarray(got)[given], np.asarray(want)[given])
  # and the hidden cells were really drawn: not all left at their old value
  assert (np.asarray(got)[~given] != np.asarray(want)[~given]).any()
  del got_strike, want_strike


def test_joined_voices_keep_no_one_step_note_and_every_given_cell(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b, (bars, steps, _, tracks) = 16, engine.data_shape
  key = jax.random.PRNGKey(3)
  classes, roll, known, z = _random_condition(engine, b, 3, given=0.3, restrikes=0.0,
                                              rests=False)
  left = {}
  for join in ((False, False), (True, False)):
    config = tiny(f"--config.model.join_short_notes={join!r}", "--config.model.gibbs_rounds=4")
    model = voicegan.VoiceModel(config, engine.mesh)
    filled = jax.jit(model.gibbs)(state["g_ema"], z, key, {"context": roll, "known": known})
    got, strike = voices_lib.classes_from_roll(layout, filled)
    given = np.asarray(known).reshape(b, bars * steps, tracks)[..., list(layout.tracks)]
    np.testing.assert_array_equal(np.asarray(got)[given], np.asarray(classes)[given])
    one_step = np.asarray(voices_lib.one_step_notes(got, strike))
    free_pair = ~given & np.concatenate([~given[:, 1:], np.zeros_like(given[:, :1])], 1)
    pitched = np.asarray(got) != voices_lib.REST
    beside_a_note = (np.concatenate([np.zeros_like(pitched[:, :1]), pitched[:, :-1]], 1)
                     | np.concatenate([pitched[:, 1:], np.zeros_like(pitched[:, :1])], 1))
    left[join] = (one_step & free_pair & beside_a_note).sum((0, 1))
  # The untrained model writes many one-step notes; the joined voice keeps none it could join,
  # the other voice is untouched by the setting.
  assert left[(False, False)][0] > 10, left
  assert left[(True, False)][0] == 0, left
  assert left[(True, False)][1] > 10, left


def test_pickup_prior_opens_free_pieces_as_the_shares_say_and_leaves_given_ones(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b, (bars, steps, _, tracks) = 32, engine.data_shape
  key = jax.random.PRNGKey(5)
  z = jax.random.normal(key, (b, engine.latent_size))
  free_cond = engine.empty_condition(key, b)
  _, roll, known, _ = _random_condition(engine, b, 5, given=0.0, restrikes=0.0, rests=False)
  known = known.at[:, 0].set(True)           # the first bar given: a restoration of the rest
  shares = tuple([0.5] + [0.0] * 3 + [0.5] + [0.0] * (steps - 5))
  opened = {}
  for prior in (False, True):
    config = tiny(f"--config.model.pickup_prior={prior}",
                  f"--config.model.pickup_shares={shares!r}", "--config.model.gibbs_rounds=4")
    model = voicegan.VoiceModel(config, engine.mesh)
    gibbs = jax.jit(model.gibbs)
    got, _ = voices_lib.classes_from_roll(layout, gibbs(state["g_ema"], z, key, free_cond))
    opened[prior] = np.asarray(got)[:, :2 * steps] != voices_lib.REST   # [B, 2 bars, V]
    given = gibbs(state["g_ema"], z, key, {"context": roll, "known": known})
    np.testing.assert_array_equal(np.asarray(given)[:, 0], np.asarray(roll)[:, 0])
  # The untrained network rests anywhere; with the prior every voice rests for the drawn 0 or
  # 4 steps, then sings for a bar, about half the pieces each.
  assert not opened[False][:, :steps].all()
  pickup = ~opened[True][:, 0, 0]
  assert not opened[True][pickup, :4].any()
  assert opened[True][pickup, 4:steps + 4].all()
  assert opened[True][~pickup, :steps].all()
  assert 6 <= pickup.sum() <= 26, pickup.sum()


def _free_and_given(engine, b: int, seed: int):
  """(z, key, nothing given, a condition with the first bar given, its roll)."""
  key = jax.random.PRNGKey(seed)
  z = jax.random.normal(key, (b, engine.latent_size))
  _, roll, known, _ = _random_condition(engine, b, seed, given=0.0, restrikes=0.0, rests=False)
  known = known.at[:, 0].set(True)
  return z, key, engine.empty_condition(key, b), {"context": roll, "known": known}, roll


def test_ornament_prior_joins_the_one_step_notes_of_plain_voices_in_free_pieces(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b = 32
  z, key, free_cond, given_cond, roll = _free_and_given(engine, b, 7)
  out = {}
  # shares over the sets of the 2 voices with one-step notes: none, voice 0, voice 1, both
  for name, shares in (("off", None), ("all plain", (1.0, 0.0, 0.0, 0.0)),
                       ("all ornamented", (0.0, 0.0, 0.0, 1.0)),
                       ("voice 1 only", (0.0, 0.0, 1.0, 0.0))):
    overrides = ["--config.model.gibbs_rounds=4"]
    if shares:
      overrides += ["--config.model.ornament_prior=True",
                    f"--config.model.ornament_shares={shares!r}"]
    model = voicegan.VoiceModel(tiny(*overrides), engine.mesh)
    gibbs = jax.jit(model.gibbs)
    got, strike = voices_lib.classes_from_roll(layout, gibbs(state["g_ema"], z, key, free_cond))
    pitched = np.asarray(got) != voices_lib.REST
    beside = (np.concatenate([np.zeros_like(pitched[:, :1]), pitched[:, :-1]], 1)
              | np.concatenate([pitched[:, 1:], np.zeros_like(pitched[:, :1])], 1))
    joinable = np.asarray(voices_lib.one_step_notes(got, strike)) & beside
    out[name] = (np.asarray(got), joinable.sum((0, 1)),
                 np.asarray(gibbs(state["g_ema"], z, key, given_cond)))
  # The untrained network writes one-step notes in both voices; plain voices keep none they
  # could join, ornamented ones are left as the network wrote them (as with the prior off).
  assert (out["off"][1] > 5).all(), out["off"][1]
  assert (out["all plain"][1] == 0).all(), out["all plain"][1]
  np.testing.assert_array_equal(out["all ornamented"][0], out["off"][0])
  assert out["voice 1 only"][1][0] == 0 and out["voice 1 only"][1][1] > 5
  # Pieces with given cells are not the prior's: bit for bit as with it off.
  for name in ("all plain", "voice 1 only"):
    np.testing.assert_array_equal(out[name][2], out["off"][2])
  np.testing.assert_array_equal(out["off"][2][:, 0], np.asarray(roll)[:, 0])


def test_syncopation_weights_steer_the_sampler(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b = 32
  z, key, free_cond, given_cond, _ = _free_and_given(engine, b, 9)
  spb = engine.config.data.steps_per_beat
  counts = {}
  for weights in ((), (6.0, 6.0), (6.0, 0.0)):
    model = voicegan.VoiceModel(tiny("--config.model.gibbs_rounds=8",
                                     f"--config.model.syncopation_weights={weights!r}"),
                                engine.mesh)
    got, strike = voices_lib.classes_from_roll(
        layout, jax.jit(model.gibbs)(state["g_ema"], z, key, free_cond))
    counts[weights] = np.asarray(voices_lib.syncopations(got, strike, spb)).sum((0, 1))
    given = jax.jit(model.gibbs)(state["g_ema"], z, key, given_cond)
    np.testing.assert_array_equal(np.asarray(given)[:, 0],
                                  np.asarray(given_cond["context"])[:, 0])
  # The untrained network changes pitch almost every step: it seldom holds a note over a beat.
  # A weight for it makes it common, in the voice it is given to (the shipped model's weights
  # are negative: they cut what its network writes too often).
  off, both, first = counts[()], counts[(6.0, 6.0)], counts[(6.0, 0.0)]
  assert (both > 5 * np.maximum(off, 2)).all(), counts
  assert first[0] > 5 * max(off[0], 2) and first[1] < 3 * max(off[1], 2), counts


def test_hold_prior_holds_a_chord_in_every_voice_where_its_plan_says(engine_state):
  engine, state = engine_state
  layout = engine.layout
  b = 32
  z, key, free_cond, given_cond, roll = _free_and_given(engine, b, 11)
  spb, bar = engine.config.data.steps_per_beat, engine.data_shape[1]
  shares = [0.0] * (1 + 3 * (bar // spb))
  shares[1] = 1.0                      # every bar: a chord held from beat 0 for 2 beats
  out = {}
  for prior in (False, True):
    model = voicegan.VoiceModel(tiny("--config.model.gibbs_rounds=4",
                                     f"--config.model.hold_prior={prior}",
                                     f"--config.model.hold_shares={tuple(shares)!r}"),
                                engine.mesh)
    gibbs = jax.jit(model.gibbs)
    got, strike = voices_lib.classes_from_roll(layout, gibbs(state["g_ema"], z, key, free_cond))
    out[prior] = (np.asarray(got), np.asarray(strike),
                  np.asarray(gibbs(state["g_ema"], z, key, given_cond)))
  classes, strike, _ = out[True]
  first = classes.reshape(b, -1, bar, layout.num_voices)[:, :, :2 * spb]     # [B, bars, 4, V]
  # Every voice sounds and holds one note over the chord's steps: no rest, no new pitch, not
  # struck again.
  assert (first != voices_lib.REST).all()
  assert (first == first[:, :, :1]).all()
  assert not strike.reshape(b, -1, bar, layout.num_voices)[:, :, 1:2 * spb].any()
  # The untrained network alone seldom does.
  off = out[False][0].reshape(b, -1, bar, layout.num_voices)[:, :, :2 * spb]
  assert (off == off[:, :, :1]).all(2).all(-1).mean() < 0.2
  # Pieces with given cells are not the prior's: bit for bit as with it off.
  np.testing.assert_array_equal(out[True][2], out[False][2])
  np.testing.assert_array_equal(out[True][2][:, 0], np.asarray(roll)[:, 0])


# --- training -------------------------------------------------------------------------------


def test_training_lowers_the_heldout_nll(tmp_path):
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  config = tiny("--config.train.num_steps=150", "--config.train.ckpt_every=150",
                "--config.train.log_every=50")
  windows = evaluate.real_windows(config, "train", 64)
  engine = voicegan.VoiceEngine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  before = voicegan.heldout_nll(engine, engine.init(jax.random.PRNGKey(0))["g"], windows)
  # Trained in a `jaxgan train` process on one CPU device: in this process 8 simulated devices
  # share 2 cores, and XLA has aborted the voices step's all-reduce there after 40 s when the
  # machine was loaded (a device waiting in the collective holding the Eigen pool).
  workdir = str(tmp_path / "run")
  done = subprocess.run(
      [sys.executable, "-m", "jaxgan.cli", "train", "--config", TINY, "--workdir", workdir,
       "--quiet", "--config.train.num_steps=150", "--config.train.ckpt_every=150",
       "--config.train.log_every=50"], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode == 0, done.stderr[-3000:]
  trained = sample_lib.Generator.from_workdir(workdir, use_ema=False)
  assert trained.step == 150
  after = voicegan.heldout_nll(engine, trained.variables["params"], windows)
  # The sampler's metre prior was measured from the training data and saved with the run,
  # a row per voice.
  rates = config_lib.load_run_config(str(tmp_path / "run")).model.onset_rates
  assert len(rates) == engine.steps * engine.layout.num_voices
  assert 0 < min(rates) <= max(rates) < 1
  assert after["eval/nll"] < 0.6 * before["eval/nll"], (before, after)
  for kind in voicegan.MASK_KINDS:
    assert after[f"eval/nll/{kind}"] < before[f"eval/nll/{kind}"]


@pytest.mark.parametrize("critic_input", voicegan.CRITIC_INPUTS)
def test_adversarial_step_updates_the_critic(critic_input):
  config = tiny("--config.loss.adv_weight=0.5", "--config.loss.kind=hinge",
                "--config.loss.gp_weight=0.0", "--config.loss.r1_gamma=1.0",
                f"--config.loss.critic_input={critic_input}")
  engine = voicegan.VoiceEngine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  state = engine.init(jax.random.PRNGKey(0))
  d_before = jax.device_get(state["d"])
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  batch = next(pipeline.train_iterator(config, engine.mesh))
  state, metrics = engine.step(state, batch)
  metrics = jax.device_get(metrics)
  for name in ("g_adv", "d_loss", "ce", "r1"):
    assert np.isfinite(metrics[name]), name
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         d_before, jax.device_get(state["d"]))
  assert all(jax.tree.leaves(changed))


# --- export and the shipped model ----------------------------------------------------------------


def test_export_loads_without_training_state_and_samples_the_same(tmp_path):
  workdir = str(tmp_path / "run")
  assert cli.main(["train", "--config", TINY, "--workdir", workdir, "--quiet",
                   "--config.train.num_steps=5", "--config.train.ckpt_every=5",
                   "--config.model.hold_prior=True"]) == 0
  # The hold prior's shares are measured from the training split when training starts.
  measured = tuple(config_lib.load_run_config(workdir).model.hold_shares)
  assert len(measured) == 1 + 3 * 4 and abs(sum(measured) - 1) < 1e-3
  out = str(tmp_path / "export")
  assert cli.main(["export", "--workdir", workdir, "--out", out, "--dtype", "float32"]) == 0
  assert sorted(os.listdir(out)) == ["config.json", "export.json", "generator.msgpack"]
  full = sample_lib.Generator.from_workdir(workdir)
  alone = sample_lib.Generator.from_workdir(out)
  assert alone.step == full.step == 5
  a = sample_lib.sample(full, jax.random.PRNGKey(4), 3)
  b = sample_lib.sample(alone, jax.random.PRNGKey(4), 3)
  np.testing.assert_array_equal(a, b)
  # --calibrate writes a note-density gain per voice into the export's config (never below 1:
  # a gain only adds notes), and the export samples with it.
  calibrated = str(tmp_path / "calibrated")
  assert cli.main(["export", "--workdir", workdir, "--out", calibrated, "--calibrate"]) == 0
  shipped = sample_lib.Generator.from_workdir(calibrated).config.model
  gain = tuple(shipped.onset_gain)
  assert len(gain) == 2 and min(gain) >= 1.0
  # ... and the leap and syncopation weights it calibrated before the gain.
  assert len(shipped.interval_weights) == 2 * voices_lib.INTERVAL_BINS
  # (the round nearest the data is kept: for the tiny model that may be the first, all 0)
  assert len(shipped.syncopation_weights) == 2
  assert all(abs(w) <= 6.0 for w in shipped.syncopation_weights)
  # ... and the held chords' shares, first of all: scaled, still a distribution.
  held = np.asarray(shipped.hold_shares)
  assert held.shape == (13,) and abs(held.sum() - 1) < 1e-3
  assert tuple(config_lib.load_run_config(workdir).model.onset_gain) == ()   # the run's own
  # A damaged weights file is refused with its name.
  with open(os.path.join(out, "generator.msgpack"), "r+b") as f:
    f.truncate(100)
  with pytest.raises(ValueError, match="generator.msgpack"):
    sample_lib.Generator.from_workdir(out)


def test_missing_workdir_is_one_line(tmp_path, capsys):
  code = cli.main(["sample", "--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
  assert code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no such workdir" in err[0] and "jaxgan train" in err[0]


def _first_test_chorale(bars: int) -> np.ndarray:
  from jaxgan.data import standard  # pylint: disable=import-outside-toplevel
  frames = standard.load_chorales()["test"][0][:bars * 16]
  return frames


def test_the_shipped_chorale_model_samples_restores_and_accompanies(tmp_path):
  gen = sample_lib.Generator.from_export(sample_lib.pretrained_path("jsb"))
  assert gen.is_voice_model and [t.name for t in gen.tracks] == ["soprano", "alto", "tenor",
                                                                  "bass"]
  rolls = sample_lib.sample(gen, jax.random.PRNGKey(0), 4, bars=4)
  spec = voice_metrics.metrics_lib.RollSpec(steps_per_beat=4, lowest_pitch=24,
                                            track_names=("s", "a", "t", "b"))
  voices = voice_metrics.from_rolls(rolls, spec)
  stats = voice_metrics.statistics(voices)
  assert np.allclose(stats["pitches_per_step"], 1.0)
  assert (np.asarray(stats["rest_share"]) < 0.5).all()      # no silent voice
  # Restoration of bars 3-4 of a test chorale: every other note comes back unchanged.
  frames = _first_test_chorale(6)
  real = voice_metrics.to_rolls(
      voice_metrics.from_pitches(frames[None], steps_per_beat=4, steps_per_bar=16),
      lowest_pitch=24, num_pitches=84)[0]
  path = str(tmp_path / "chorale.mid")
  gen.write_midi(real, path)
  out = str(tmp_path / "restored.mid")
  assert cli.main(["inpaint", "--pretrained", "jsb", "--input", path, "--bars", "3-4",
                   "--out", out]) == 0
  from jaxgan import inpaint  # pylint: disable=import-outside-toplevel
  song, _, _ = inpaint._read(gen, inpaint._load(gen, out), out,  # pylint: disable=protected-access
                             [t.name for t in gen.tracks])
  restored = inpaint._model_roll(gen, song, range(4))  # pylint: disable=protected-access
  original = real > 0
  keep = np.ones(restored.shape[0], bool)
  keep[2:4] = False
  np.testing.assert_array_equal(restored[keep], original[:restored.shape[0]][keep])
  for t in range(4):
    assert restored[2:4, ..., t].sum(-1).max() <= 1
  acc = str(tmp_path / "accompanied.mid")
  assert cli.main(["accompany", "--pretrained", "jsb", "--input", path, "--given", "soprano",
                   "--out", acc]) == 0
  with open(os.path.join(sample_lib.pretrained_path("jsb"), "export.json")) as f:
    assert json.load(f)["params"] > 10_000


def test_voices_and_polyphonic_tracks_mix_in_one_model():
  # Track 0 sings one note at a time; track 1 (chords) keeps per-pitch cells.
  config = tiny("--config.data.mono_tracks=(0,)")
  engine = voicegan.VoiceEngine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  state = engine.init(jax.random.PRNGKey(0))
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  batches = pipeline.train_iterator(config, engine.mesh)
  for _ in range(3):
    state, metrics = engine.step(state, next(batches))
  metrics = jax.device_get(metrics)
  assert np.isfinite(metrics["poly_bce"]) and np.isfinite(metrics["ce"])
  rolls = np.asarray(engine.sample_ema(state, jax.random.PRNGKey(1), 8))
  assert (rolls[..., 0].sum(-1) <= 1).all()
  assert (rolls[..., 1].sum(-1) > 1).any()   # the chord track may sound several pitches
