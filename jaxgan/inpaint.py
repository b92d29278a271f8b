"""Music restoration and accompaniment: regenerate some (bar, track) cells of a user's MIDI file.

    gen = jaxgan.sample.Generator.from_workdir("runs/jsb")
    midi = inpaint(gen, "song.mid", bars=[4, 5, 6, 7], key=jax.random.PRNGKey(0))  # 0-based
    midi.dump("restored.mid")
    midi = accompany(gen, "melody.mid", given=["soprano"], key=jax.random.PRNGKey(0))

The file is quantized onto the run's grid to give the generator its context; the generator then
fills the hidden cells one training window at a time (each window keeps at least the bar before
it as context, so long gaps are filled left to right and stay connected). The output is the
*original* MIDI file with the notes that start in hidden cells replaced by generated ones: every
other note, tempo, meter and instrument comes back exactly as it was.

A run trained with `conditioning.infill` / `conditioning.accompany` sees the context directly.
Any other run is used by search: `candidates` latents are decoded and the one whose output agrees
best with the given cells (F1 of sounding cells) fills the gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import miditoolkit
import numpy as np

from jaxgan import sample as sample_lib
from jaxgan.config import ConfigError
from jaxgan.midi import io as midi_io
from jaxgan.midi import pianoroll
from jaxgan.midi import tracks as tracks_lib



def parse_bars(text: str) -> list[int]:
  """'5-8' or '5-8,12' (1-based, inclusive) -> sorted 0-based bar indices."""
  bars: set[int] = set()
  for part in str(text).replace(" ", "").split(","):
    if not part:
      continue
    lo, _, hi = part.partition("-")
    try:
      a, b = int(lo), int(hi or lo)
    except ValueError:
      raise ConfigError(f"--bars={text!r}: expected bar numbers like 5-8 or 5-8,12") from None
    if a < 1 or b < a:
      raise ConfigError(f"--bars={text!r}: bars count from 1 and ranges go up (5-8)")
    bars.update(range(a - 1, b))
  if not bars:
    raise ConfigError(f"--bars={text!r}: no bars given")
  return sorted(bars)


def _midi_config(gen, track_names: Sequence[str]) -> midi_io.MidiConfig:
  d = gen.config.data
  lpd5 = tuple(t.name for t in tracks_lib.LPD5_TRACKS)
  if tuple(track_names) == lpd5:
    return midi_io.MidiConfig(steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
                              num_pitches=d.num_pitches, track_mode="lpd5", out_of_range="fold")
  return midi_io.MidiConfig(steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
                            num_pitches=d.num_pitches, track_mode="parts",
                            track_names=tuple(track_names), out_of_range="fold")


def _load(gen, path: str) -> miditoolkit.MidiFile:
  return midi_io.load_midi(path, config=_midi_config(gen, [t.name for t in gen.tracks]))


def _read(gen, midi: miditoolkit.MidiFile, path: str, track_names: Sequence[str]):
  """(song on the run's grid, steps shifted, instrument -> song track) of a loaded file."""
  config = _midi_config(gen, track_names)
  song, counts = midi_io.quantize(midi, config, source=str(path))
  meter = tuple(gen.config.data.meter)
  if tuple(song.time_signature) != meter:
    raise midi_io.MidiError(
        str(path), f"meter {midi_io.meter_name(song.time_signature)}; the model was trained on "
        f"{midi_io.meter_name(meter)}")
  playing = [inst for inst in midi.instruments if inst.notes]
  index, _ = tracks_lib.assign_tracks(
      [(int(i.program), bool(i.is_drum)) for i in playing], config.track_mode,
      config.track_names)
  inst_track = {id(inst): t for inst, t in zip(playing, index)}
  return song, int(counts.get("steps_shifted", 0)), inst_track


def fill(gen: "sample_lib.Generator", roll: np.ndarray, known: np.ndarray, key: jax.Array, *,
         candidates: int = 64, style: str | None = None) -> np.ndarray:
  """Fills the cells of bool `roll` [bars, steps, pitches, tracks] whose (bar, track) is not
  `known` [bars, tracks]; known cells come back unchanged."""
  roll = np.asarray(roll, bool).copy()
  known = np.asarray(known, bool).copy()
  bars = roll.shape[0]
  window = gen.bars_per_phrase
  if bars < window:  # pad to one window; the padding is generated and dropped
    roll = np.concatenate([roll, np.zeros((window - bars,) + roll.shape[1:], bool)])
    known = np.concatenate([known, np.zeros((window - bars, known.shape[1]), bool)])
  total = roll.shape[0]
  engine = gen.engine
  # A generator that reads the given cells makes one fill; any other is searched.
  num = 1 if engine.cond["context"] else max(1, int(candidates))
  style_ids = None
  if engine.cond["num_styles"]:
    sid = gen.style_id(style) if style is not None else int(
        jax.random.randint(jax.random.fold_in(key, 1), [], 0, engine.cond["num_styles"]))
    style_ids = jnp.full([num], sid, jnp.int32)
  elif style is not None:
    gen.style_id(style)  # raises: this run has no styles
  for count in range(total):
    todo = np.flatnonzero(~known[:bars].all(axis=1))
    if len(todo) == 0:
      break
    start = max(0, min(int(todo[0]) - 1, total - window))
    ctx, kn = roll[start:start + window], known[start:start + window]
    k = jax.random.fold_in(key, count)
    z = jax.random.normal(k, [num, engine.latent_size], jnp.float32)
    cond = None
    if engine.conditional:
      cond = {"context": jnp.asarray(np.where(ctx, 1.0, -1.0)[None].repeat(num, 0),
                                     jnp.float32),
              "known": jnp.asarray(kn[None].repeat(num, 0))}
      if style_ids is not None:
        cond["style"] = style_ids
    out = sample_lib.decode_latents(gen, z, jax.random.fold_in(k, 1), cond=cond)
    if num > 1:  # search: the candidate that agrees best with the given cells
      given = kn[None, :, None, None, :]
      hit = (out & ctx[None] & given).sum(axis=(1, 2, 3, 4))
      sounding = ((out & given).sum(axis=(1, 2, 3, 4)) + (ctx[None] & given).sum(
          axis=(1, 2, 3, 4)))
      best = int(np.argmax(2.0 * hit / np.maximum(sounding, 1)))
    else:
      best = 0
    hidden = ~kn[:, None, None, :]
    roll[start:start + window] = np.where(hidden, out[best], ctx)
    known[start:start + window] = True
  return roll[:bars]


def _notes_of(gen, roll: np.ndarray, cells: np.ndarray, time_signature, tracks) -> np.ndarray:
  """Notes [N, 5] of `roll` inside the (bar, track) `cells` only (cut at their edges)."""
  masked = np.where(cells[:, None, None, :], roll, False)
  config = _midi_config(gen, [t.name for t in tracks]) if len(tracks) else None
  song = pianoroll.from_pianoroll(masked, config, time_signature=tuple(time_signature),
                                  tracks=tracks)
  return np.asarray(song.notes).reshape(-1, 5)


def _free_span(start: int, end: int, taken) -> tuple[int, int] | None:
  """The part of [start, end) clear of the kept notes of the same pitch: a note held over from
  a given bar keeps sounding, and the generated note starts after it (or is dropped). Two
  overlapping notes of one pitch would pair up differently when the file is read back."""
  for a, b in sorted(taken):
    if a < end and start < b:       # overlap: start after the kept note, if anything is left
      if a <= start:
        start = b
      else:
        end = a
  return (start, end) if end > start else None


def _rebuild(gen, midi: miditoolkit.MidiFile, song, shift: int, inst_track: dict,
             roll: np.ndarray, hidden: np.ndarray) -> miditoolkit.MidiFile:
  """The original file, minus notes starting in hidden cells, plus the generated ones there."""
  tpb, spb = int(midi.ticks_per_beat), int(song.steps_per_beat)
  steps_per_bar = song.steps_per_bar
  bars = hidden.shape[0]

  def bar_of(tick: int) -> int:
    return ((2 * tick * spb + tpb) // (2 * tpb) - shift) // steps_per_bar

  def tick_of(step: int) -> int:
    return ((step + shift) * tpb * 2 + spb) // (2 * spb)

  def _given_parts(note: miditoolkit.Note, t: int) -> list[miditoolkit.Note]:
    """What of the note sounds in given bars, so that those bars keep exactly their cells and
    hidden bars hold generated notes alone (a monophonic voice stays monophonic): a note held
    from a given bar into a hidden one ends where the hidden bar starts, and what of it sounds
    on in a later given bar is kept there, from that bar's start."""
    first, last = bar_of(int(note.start)), bar_of(max(int(note.end) - 1, int(note.start)))
    if not any(0 <= b < bars and hidden[b, t] for b in range(first, last + 1)):
      return [note]
    parts, begin = [], None    # runs of given bars the note sounds in
    for b in range(first, last + 2):
      is_given = b <= last and not (0 <= b < bars and hidden[b, t])
      if is_given and begin is None:
        begin = b
      elif not is_given and begin is not None:
        lo = int(note.start) if begin == first else tick_of(begin * steps_per_bar)
        hi = int(note.end) if b > last else tick_of(b * steps_per_bar)
        if hi > lo:
          parts.append(miditoolkit.Note(note.velocity, note.pitch, lo, hi))
        begin = None
    return parts

  track_inst: dict[int, miditoolkit.Instrument] = {}
  for inst in midi.instruments:
    t = inst_track.get(id(inst))
    if t is None:
      continue
    track_inst.setdefault(t, inst)
    inst.notes = [p for n in inst.notes for p in _given_parts(n, t)]
  notes = _notes_of(gen, roll, hidden, song.time_signature, gen.tracks)
  for t in range(hidden.shape[1]):
    mine = notes[notes[:, 0] == t]
    if not len(mine):
      continue
    inst = track_inst.get(t)
    if inst is None:
      track = gen.tracks[t]
      inst = miditoolkit.Instrument(int(track.program), bool(track.is_drum), str(track.name))
      midi.instruments.append(inst)
    velocity = int(np.median([n.velocity for n in inst.notes])) if inst.notes else 80
    kept: dict[int, list[tuple[int, int]]] = {}
    for n in inst.notes:
      kept.setdefault(int(n.pitch), []).append((int(n.start), int(n.end)))
    for _, pitch, onset, duration, _ in mine.tolist():
      start, end = tick_of(onset), tick_of(onset + duration)
      # A pickup padded to a full bar puts the grid's first steps before tick 0: a note there
      # sounds from tick 0 on, or not at all if it ends before.
      if end <= 0:
        continue
      span = _free_span(max(start, 0), end, kept.get(int(pitch), ()))
      if span:
        inst.notes.append(miditoolkit.Note(velocity, int(pitch), *span))
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
  midi.max_tick = max(midi.max_tick, max((n.end for i in midi.instruments for n in i.notes),
                                         default=0) + 1)
  return midi


def _model_roll(gen, song, song_tracks: Sequence[int]) -> np.ndarray:
  """The song's piano-roll on the model's tracks (song track i -> model track song_tracks[i])."""
  config = _midi_config(gen, [t.name for t in song.tracks])
  part = pianoroll.to_pianoroll(song, config) > 0
  roll = np.zeros(part.shape[:3] + (len(gen.tracks),), bool)
  roll[..., list(song_tracks)] = part
  return roll


def inpaint(gen: "sample_lib.Generator", path: str, bars: Sequence[int], key: jax.Array, *,
            candidates: int = 64, style: str | None = None) -> miditoolkit.MidiFile:
  """Regenerates the 0-based `bars` of every track of a MIDI file with the run's tracks."""
  names = [t.name for t in gen.tracks]
  midi = _load(gen, path)
  song, shift, inst_track = _read(gen, midi, path, names)
  bad = [b + 1 for b in bars if not 0 <= b < song.num_bars]
  if bad:
    raise ConfigError(f"--bars: {path} has {song.num_bars} bars; bar(s) {bad} are outside it")
  roll = _model_roll(gen, song, range(len(names)))
  known = np.ones([song.num_bars, len(names)], bool)
  known[list(bars)] = False
  filled = fill(gen, roll, known, key, candidates=candidates, style=style)
  return _rebuild(gen, midi, song, shift, inst_track, filled, ~known)


def accompany(gen: "sample_lib.Generator", path: str, given: Sequence[str], key: jax.Array, *,
              candidates: int = 64, style: str | None = None) -> miditoolkit.MidiFile:
  """Generates every track but `given` around them. The file holds either just the given parts
  (in that order) or all of the run's tracks (the others are then replaced)."""
  names = [t.name for t in gen.tracks]
  unknown = [g for g in given if g not in names]
  if unknown or not given:
    raise ConfigError(f"--given={','.join(given)!r}: the run's tracks are {', '.join(names)}")
  if len(set(given)) == len(names):
    raise ConfigError("--given names every track: there is nothing to accompany")
  given_idx = [names.index(g) for g in given]
  midi = _load(gen, path)
  parts = sum(1 for inst in midi.instruments if inst.notes)
  if parts == len(names) and len(given) != len(names):
    song, shift, inst_track = _read(gen, midi, path, names)
    roll = _model_roll(gen, song, range(len(names)))
  else:
    song, shift, inst_track = _read(gen, midi, path, list(given))
    inst_track = {k: given_idx[v] for k, v in inst_track.items() if v is not None}
    roll = _model_roll(gen, song, given_idx)
  known = np.zeros([song.num_bars, len(names)], bool)
  known[:, given_idx] = True
  filled = fill(gen, roll, known, key, candidates=candidates, style=style)
  return _rebuild(gen, midi, song, shift, inst_track, filled, ~known)

