"""Conditional generation: the generator wrapper, projection D, training masks, and the
inpaint / accompany / --style commands on tiny runs."""

import os

import jax
import jax.numpy as jnp
import miditoolkit
import numpy as np
import pytest

from jaxgan import cli, config as config_lib, models, inpaint, sample
from tests.tiny_run import train_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
SHAPE = (4, 8, 36, 3)  # bars, steps, pitches, tracks


def _tiny_model(**cond):
  cfg = models.model_config("tutorial")
  cfg.g_channels, cfg.d_channels = (8, 8, 8, 4, 4), (4, 4, 8, 8, 8, 8, 8)
  full = dict(context=True, num_styles=0, context_features=8, style_features=4)
  full.update(cond)
  return models.build(cfg, SHAPE, full)


def test_given_cells_come_back_exactly_and_the_rest_depends_on_z():
  gen, _ = _tiny_model()
  key = jax.random.PRNGKey(0)
  context = jnp.where(jax.random.bernoulli(key, 0.3, (2,) + SHAPE), 1.0, -1.0)
  known = jnp.zeros([2, 4, 3], bool).at[:, :2].set(True).at[:, 3, 0].set(True)
  cond = {"context": context, "known": known}
  z = jax.random.normal(key, [2, gen.latent_size])
  variables = gen.init(key, z, train=False, cond=cond)
  out1 = gen.apply(variables, z, train=False, cond=cond)
  out2 = gen.apply(variables, -z, train=False, cond=cond)
  mask = np.broadcast_to(np.asarray(known)[:, :, None, None, :], out1.shape)
  np.testing.assert_array_equal(np.asarray(out1)[mask], np.asarray(context)[mask])
  np.testing.assert_array_equal(np.asarray(out2)[mask], np.asarray(context)[mask])
  assert not np.allclose(np.asarray(out1)[~mask], np.asarray(out2)[~mask])
  # The generator does read the context: other given cells change the free cells too.
  out3 = gen.apply(variables, z, train=False, cond={"context": -context, "known": known})
  assert not np.allclose(np.asarray(out1)[~mask], np.asarray(out3)[~mask])


def test_style_needs_a_label_and_changes_both_networks():
  gen, disc = _tiny_model(context=False, num_styles=3)
  key = jax.random.PRNGKey(1)
  z = jax.random.normal(key, [2, gen.latent_size])
  style = jnp.array([0, 2])
  variables = gen.init(key, z, train=False, cond={"style": style})
  a = gen.apply(variables, z, train=False, cond={"style": style})
  b = gen.apply(variables, z, train=False, cond={"style": jnp.array([1, 1])})
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match="style-conditional"):
    gen.apply(variables, z, train=False)
  x = jnp.zeros((2,) + SHAPE).at[..., 0].set(1.0)
  dv = disc.init(key, x, style)
  dv = jax.tree.map(lambda p: p + 0.1, dv)  # a trained projection is not ~0
  assert not np.allclose(disc.apply(dv, x, style), disc.apply(dv, x, jnp.array([1, 1])))
  with pytest.raises(ValueError, match="style-conditional"):
    disc.apply(dv, x)


def test_training_masks_follow_the_shares():
  real = jnp.ones((4000,) + SHAPE)
  known = np.asarray(models.training_condition(
      jax.random.PRNGKey(2), real, None, infill=0.5, accompany=0.3)["known"])
  per_bar = known.all(axis=2) | ~known.any(axis=2)        # infill: whole bars
  per_track = (known == known[:, :1]).all(axis=1)          # accompaniment: whole tracks
  nothing = ~known.any(axis=(1, 2))
  infill = per_bar.all(axis=1) & known.any(axis=(1, 2)) & ~known.all(axis=(1, 2))
  accompany = per_track.all(axis=1) & ~per_bar.all(axis=1)
  assert abs(infill.mean() - 0.5) < 0.04 and abs(nothing.mean() - 0.2) < 0.04
  assert abs(accompany.mean() - 0.3) < 0.04
  # Infilling hides one contiguous span of 1..bars-1 bars.
  for row in known[infill][:200, :, 0]:
    hidden = np.flatnonzero(~row)
    assert 1 <= len(hidden) <= 3 and np.all(np.diff(hidden) == 1)
  # Accompaniment gives 1..tracks-1 whole tracks.
  given = known[accompany][:, 0].sum(-1)
  assert given.min() == 1 and given.max() == 2
  assert not (infill & accompany).any()


def test_bad_conditioning_values_fail_with_the_key():
  with pytest.raises(config_lib.ConfigError, match="conditioning.infill"):
    config_lib.load_config(TINY, ["--config.conditioning.infill=1.5"])
  with pytest.raises(config_lib.ConfigError, match=r"infill \+ conditioning.accompany"):
    config_lib.load_config(TINY, ["--config.conditioning.infill=0.7",
                                  "--config.conditioning.accompany=0.5"])


def test_parse_bars():
  assert inpaint.parse_bars("5-8") == [4, 5, 6, 7]
  assert inpaint.parse_bars("2,5-6, 2") == [1, 4, 5]
  for bad in ("0-2", "8-5", "x", ","):
    with pytest.raises(config_lib.ConfigError, match="--bars"):
      inpaint.parse_bars(bad)


def _train(workdir, *overrides):
  return str(train_tiny(workdir, *overrides, steps=3))


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("cond"), "--config.conditioning.infill=0.5",
                "--config.conditioning.accompany=0.3", "--config.conditioning.style=true")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("plain"))


def _song(workdir, path, bars=6, seed=3):
  gen = sample.Generator.from_workdir(workdir)
  rolls = sample.sample(gen, jax.random.PRNGKey(seed), 1, bars=bars)
  gen.write_midi(rolls[0], str(path))
  return gen


def _notes(midi, keep):
  tpbar = midi.ticks_per_beat * 4
  return {inst.name: sorted((n.start, n.end, n.pitch, n.velocity) for n in inst.notes
                            if keep(n.start // tpbar)) for inst in midi.instruments}


@pytest.mark.parametrize("which", ["cond_run", "plain_run"])
def test_inpaint_keeps_every_note_outside_the_bars(which, request, tmp_path, capsys):
  workdir = request.getfixturevalue(which)
  src, out = tmp_path / "song.mid", tmp_path / "restored.mid"
  _song(workdir, src)
  assert cli.main(["inpaint", "--workdir", workdir, "--input", str(src), "--bars", "3-4",
                   "--out", str(out), "--candidates", "8"]) == 0
  assert ("conditional generator" if which == "cond_run" else "best of 8") in (
      capsys.readouterr().out)
  before, after = miditoolkit.MidiFile(str(src)), miditoolkit.MidiFile(str(out))
  # Every cell of the given bars is as it was; notes wholly inside them come back unchanged (a
  # note held into bar 3 ends where it starts, one held out of bar 4 sounds on from bar 5).
  gen = sample.Generator.from_workdir(workdir)
  cells = {}
  for name, path in (("before", src), ("after", out)):
    song, _, _ = inpaint._read(gen, inpaint._load(gen, str(path)), str(path),
                               [t.name for t in gen.tracks])
    cells[name] = inpaint._model_roll(gen, song, range(len(gen.tracks)))
  given = np.ones(cells["before"].shape[0], bool)
  given[2:4] = False
  np.testing.assert_array_equal(cells["after"][given], cells["before"][given])
  tpbar = before.ticks_per_beat * 4
  wholly_given = lambda n: n.end <= 2 * tpbar or n.start >= 4 * tpbar
  kept = _notes(before, lambda bar: True)
  for inst in after.instruments:
    was = [(n.start, n.end, n.pitch, n.velocity) for n in next(
        i for i in before.instruments if i.name == inst.name).notes if wholly_given(n)]
    assert set(was) <= set((n.start, n.end, n.pitch, n.velocity) for n in inst.notes)
  assert sum(map(len, kept.values())) > 0
  inside = lambda bar: 2 <= bar < 4
  assert _notes(after, inside) != _notes(before, inside)  # regenerated
  assert after.tempo_changes[0].tempo == pytest.approx(before.tempo_changes[0].tempo)


def test_inpaint_is_deterministic_per_seed_and_checks_bars(cond_run, tmp_path, capsys):
  src = tmp_path / "song.mid"
  _song(cond_run, src)
  outs = []
  for i, seed in enumerate((0, 0, 1)):
    out = tmp_path / f"r{i}.mid"
    assert cli.main(["inpaint", "--workdir", cond_run, "--input", str(src), "--bars", "2-5",
                     "--out", str(out), "--seed", str(seed)]) == 0
    outs.append(_notes(miditoolkit.MidiFile(str(out)), lambda bar: True))
  assert outs[0] == outs[1] and outs[0] != outs[2]
  assert cli.main(["inpaint", "--workdir", cond_run, "--input", str(src), "--bars", "9",
                   "--out", str(tmp_path / "x.mid")]) == 2
  assert "has 6 bars" in capsys.readouterr().err


def test_accompany_keeps_the_given_part_and_adds_the_others(cond_run, tmp_path):
  gen = _song(cond_run, tmp_path / "full.mid")
  # A file with only the melody: keep track0's instrument alone.
  full = miditoolkit.MidiFile(str(tmp_path / "full.mid"))
  melody = miditoolkit.MidiFile(str(tmp_path / "full.mid"))
  melody.instruments = [full.instruments[0]]
  melody.dump(str(tmp_path / "melody.mid"))
  out = tmp_path / "acc.mid"
  assert cli.main(["accompany", "--workdir", cond_run, "--input", str(tmp_path / "melody.mid"),
                   "--given", "track0", "--out", str(out)]) == 0
  result = miditoolkit.MidiFile(str(out))
  names = [t.name for t in gen.tracks]
  assert sorted(i.name for i in result.instruments) == sorted(names)
  assert _notes(result, lambda b: True)["track0"] == _notes(melody, lambda b: True)["track0"]
  assert len(_notes(result, lambda b: True)["track1"]) > 0
  with pytest.raises(config_lib.ConfigError, match="the run's tracks are track0, track1"):
    inpaint.accompany(gen, str(tmp_path / "melody.mid"), ["soprano"], jax.random.PRNGKey(0))


def test_style_sampling_and_unknown_style(cond_run, tmp_path, capsys):
  gen = sample.Generator.from_workdir(cond_run)
  assert gen.style_names == ("pattern0", "pattern1", "pattern2", "pattern3")
  key = jax.random.PRNGKey(0)
  a = sample.sample(gen, key, 4, style="pattern1")
  np.testing.assert_array_equal(a, sample.sample(gen, key, 4, style="pattern1"))
  assert not np.array_equal(a, sample.sample(gen, key, 4, style="pattern2"))
  assert cli.main(["sample", "--workdir", cond_run, "--style", "baroque", "--num", "2",
                   "--out", str(tmp_path / "s")]) == 2
  err = capsys.readouterr().err
  assert "'baroque' is not a style of this run" in err and "pattern0, pattern1" in err
  assert cli.main(["sample", "--workdir", cond_run, "--style", "pattern3", "--num", "2",
                   "--out", str(tmp_path / "s")]) == 0


def test_bernoulli_temperature(plain_run):
  gen = sample.Generator.from_workdir(plain_run)
  key = jax.random.PRNGKey(4)
  hard = sample.sample(gen, key, 32)  # threshold
  cold = sample.sample(gen, key, 32, binarize="bernoulli", temperature=1e-4)
  hot = sample.sample(gen, key, 32, binarize="bernoulli", temperature=100.0)
  assert (cold == hard).mean() > 0.99          # T -> 0: the threshold decision
  assert abs(hot.mean() - 0.5) < 0.02          # T -> inf: a coin per cell
  with pytest.raises(ValueError, match="temperature"):
    sample.sample(gen, key, 2, binarize="bernoulli", temperature=0.0)


def test_a_bad_input_file_is_named_and_nothing_is_written(plain_run, tmp_path, capsys):
  bad = tmp_path / "broken.mid"
  bad.write_bytes(b"MThd" + os.urandom(200))
  out = tmp_path / "out.mid"
  for command, extra in (("inpaint", ["--bars", "1-2"]), ("accompany", ["--given", "track0"])):
    assert cli.main([command, "--workdir", plain_run, "--input", str(bad), "--out", str(out),
                     *extra]) == 1
    err = capsys.readouterr().err
    assert f"jaxgan {command}: {bad}:" in err
    assert not out.exists()


def test_notes_generated_before_a_padded_pickup_are_clipped_or_dropped(plain_run, tmp_path):
  gen = sample.Generator.from_workdir(plain_run)
  # A 1/4 pickup bar, then 4/4: the loader pads the pickup to a full 4/4 bar, so the grid's
  # first three beats lie before tick 0 (steps_shifted < 0).
  tpb = 480
  midi = miditoolkit.MidiFile(ticks_per_beat=tpb)
  midi.time_signature_changes = [miditoolkit.TimeSignature(1, 4, 0),
                                 miditoolkit.TimeSignature(4, 4, tpb)]
  melody = miditoolkit.Instrument(0, name="track0")
  melody.notes = [miditoolkit.Note(80, 60, 0, tpb)] + [
      miditoolkit.Note(80, 62 + i % 3, tpb * (i + 1), tpb * (i + 2)) for i in range(8)]
  midi.instruments = [melody]
  midi.dump(str(tmp_path / "pickup.mid"))
  loaded = inpaint._load(gen, str(tmp_path / "pickup.mid"))
  # The file holds the melody alone, as `accompany --given track0` reads it.
  song, shift, inst_track = inpaint._read(gen, loaded, str(tmp_path / "pickup.mid"), ["track0"])
  steps_per_beat = gen.config.data.steps_per_beat
  assert shift == -3 * steps_per_beat
  bars, steps, pitches, tracks = (song.num_bars,) + config_lib.data_shape(gen.config)[1:]
  roll = np.zeros([bars, steps, pitches, tracks], bool)
  roll[0, :, 10, 1] = True                     # all of bar 0: from the padding into the pickup
  roll[0, :2 * steps_per_beat, 12, 1] = True   # the first two beats: in the padding only
  hidden = np.zeros([bars, tracks], bool)
  hidden[0, 1] = True
  out = inpaint._rebuild(gen, loaded, song, shift, inst_track, roll, hidden)
  out.dump(str(tmp_path / "out.mid"))
  back = miditoolkit.MidiFile(str(tmp_path / "out.mid"))
  generated = [(n.pitch, n.start, n.end) for i in back.instruments if i.name != "track0"
               for n in i.notes]
  low = gen.config.data.lowest_pitch
  assert generated == [(low + 10, 0, tpb)]     # clipped to tick 0; the other one dropped
  kept = [(n.pitch, n.start, n.end) for i in back.instruments if i.name == "track0"
          for n in i.notes]
  assert kept == [(n.pitch, n.start, n.end) for n in melody.notes]


def test_a_given_bar_keeps_the_tail_of_a_note_begun_in_a_regenerated_bar(plain_run, tmp_path):
  gen = sample.Generator.from_workdir(plain_run)
  tpb, bar = 480, 4 * 480
  midi = miditoolkit.MidiFile(ticks_per_beat=tpb)
  low = gen.config.data.lowest_pitch
  parts = []
  for t, track in enumerate(gen.tracks):
    inst = miditoolkit.Instrument(0, name=track.name)
    inst.notes = [miditoolkit.Note(80, low + 5 + t, b * bar, (b + 1) * bar) for b in range(6)]
    parts.append(inst)
  # Begins in bar 4 (regenerated), sounds on through the first beat of bar 5 (given).
  parts[0].notes[3] = miditoolkit.Note(80, low + 20, 3 * bar, 4 * bar + tpb)
  parts[0].notes[4] = miditoolkit.Note(80, low + 5, 4 * bar + tpb, 5 * bar)
  midi.instruments = parts
  midi.dump(str(tmp_path / "song.mid"))
  names = [t.name for t in gen.tracks]
  loaded = inpaint._load(gen, str(tmp_path / "song.mid"))
  song, shift, inst_track = inpaint._read(gen, loaded, str(tmp_path / "song.mid"), names)
  roll = inpaint._model_roll(gen, song, range(len(names)))
  hidden = np.zeros([song.num_bars, len(names)], bool)
  hidden[2:4] = True
  roll[2:4] = False                            # the model leaves the two bars silent
  out = inpaint._rebuild(gen, loaded, song, shift, inst_track, roll, hidden)
  kept = sorted((n.pitch, n.start, n.end) for n in out.instruments[0].notes)
  assert (low + 20, 4 * bar, 4 * bar + tpb) in kept      # the tail, from bar 5's start
  assert not any(2 * bar <= start < 4 * bar for _, start, _ in kept)
  assert (low + 5, 5 * bar, 6 * bar) in kept and (low + 5, 0, bar) in kept
