"""Looking: a static HTML page of samples, with piano-rolls, audio players, metrics and MIDI links.

    jaxgan.gallery.build_gallery("samples/")    # samples/index.html, one PNG per sample beside it

Every link is relative, so the folder can be copied or served as it is. The page has no scripts.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import urllib.parse
from typing import Any, Sequence

import numpy as np

from jaxgan import paths
from jaxgan import workdir as workdir_lib

MIDI_EXTENSIONS = (".mid", ".midi")
METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class Grid:
  """How a MIDI file becomes a piano-roll image: steps per quarter note and the pitch rows.

  `lowest_pitch`/`num_pitches` of None fit the rows to the notes (whole octaves).
  """

  steps_per_beat: int = 4
  lowest_pitch: int | None = None
  num_pitches: int | None = None


@dataclasses.dataclass(frozen=True)
class MidiRoll:
  """A MIDI file on a grid: bool [bars, steps_per_bar, pitches, tracks] and the track names."""

  roll: np.ndarray
  track_names: tuple[str, ...]
  lowest_pitch: int


def find_midis(folder: str | os.PathLike) -> list[str]:
  """The MIDI files directly in `folder`, sorted by name ([] when it does not exist)."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    return []
  return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                if name.lower().endswith(MIDI_EXTENSIONS) and not name.startswith(".")
                and os.path.isfile(os.path.join(folder, name)))


def run_grid(workdir: str | os.PathLike) -> Grid | None:
  """The grid a train workdir's model samples on (from its config.json), None without one."""
  try:
    data = json.loads(paths.read_text(workdir_lib.config_path(os.fspath(workdir))))["data"]
    return Grid(steps_per_beat=int(data["steps_per_beat"]),
                lowest_pitch=int(data["lowest_pitch"]), num_pitches=int(data["num_pitches"]))
  except (OSError, ValueError, KeyError, TypeError):
    return None


def read_midi_roll(path: str | os.PathLike, grid: Grid = Grid()) -> MidiRoll:
  """A MIDI file as a piano-roll, one track per (MIDI track, channel) that carries channel
  messages, in file order: the order `jaxgan sample` writes tracks in, even empty ones.
  """
  import mido  # pylint: disable=import-outside-toplevel  # miditoolkit's MIDI parser
  mid = mido.MidiFile(os.fspath(path))
  tpb = mid.ticks_per_beat
  spb = grid.steps_per_beat
  meter, names, notes, end = (4, 4), {}, [], 0
  for t, track in enumerate(mid.tracks):
    tick, name, sounding = 0, None, {}
    for msg in track:
      tick += msg.time
      if msg.type == "track_name" and name is None:
        name = msg.name
      elif msg.type == "time_signature" and tick == 0:
        meter = (msg.numerator, msg.denominator)
      if not hasattr(msg, "channel"):
        continue
      key = (t, msg.channel)
      names.setdefault(key, name)
      if msg.type == "note_on" and msg.velocity > 0:
        sounding.setdefault((key, msg.note), []).append(tick)
      elif msg.type in ("note_off", "note_on") and sounding.get((key, msg.note)):
        notes.append((key, msg.note, sounding[(key, msg.note)].pop(0), tick))
    end = max(end, tick)
  keys = list(names)
  steps_per_bar = max(1, round(meter[0] * spb * 4 / meter[1]))

  def step(tick: int) -> int:
    return int(round(tick * spb / tpb))

  total = max([step(end)] + [step(n[2]) + 1 for n in notes])
  bars = max(1, math.ceil(total / steps_per_bar))
  pitches = [n[1] for n in notes]
  low = grid.lowest_pitch if grid.lowest_pitch is not None else (
      min(pitches) // 12 * 12 if pitches else 48)
  size = grid.num_pitches if grid.num_pitches is not None else (
      max(12, (max(pitches) // 12 * 12 + 12) - low) if pitches else 24)
  roll = np.zeros((bars * steps_per_bar, size, max(1, len(keys))), bool)
  index = {k: i for i, k in enumerate(keys)}
  for key, pitch, start, stop in notes:
    if low <= pitch < low + size:  # notes outside a given pitch range are not drawn
      a = step(start)
      roll[a:max(a + 1, step(stop)), pitch - low, index[key]] = True
  track_names = tuple(names[k] or f"track{i}" for i, k in enumerate(keys)) or ("track0",)
  return MidiRoll(roll.reshape(bars, steps_per_bar, size, -1), track_names, low)


def write_pianoroll_png(midi_path: str | os.PathLike, png_path: str | os.PathLike | None = None,
                        *, grid: Grid = Grid(), scale: int = 3) -> str:
  """Draws one MIDI file as a piano-roll PNG (default: beside it); returns the PNG path."""
  from jaxgan import summary  # pylint: disable=import-outside-toplevel
  midi_path = os.fspath(midi_path)
  png_path = os.fspath(png_path) if png_path else os.path.splitext(midi_path)[0] + ".png"
  roll = read_midi_roll(midi_path, grid).roll
  summary.save_png(summary.render_pianorolls(roll[None], columns=1, scale=scale), png_path)
  return png_path


def read_metrics(folder: str | os.PathLike) -> dict[str, Any] | None:
  """The metrics.json `jaxgan sample` wrote in `folder`, or None."""
  path = os.path.join(os.fspath(folder), METRICS_FILE)
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


def _esc(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _href(path: str, base: str) -> str:
  """A relative, percent-encoded, HTML-escaped link from the page's folder to `path`."""
  rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base)).replace(os.sep, "/")
  return _esc(urllib.parse.quote(rel))


def _format(name: str, value: Any) -> str:
  from jaxgan import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  try:
    # The same formatting as the `jaxgan sample` table (percentages, "-" for NaN).
    return metrics_lib._format(name, float(value))  # pylint: disable=protected-access
  except (TypeError, ValueError):
    return str(value)


def metrics_html(values: dict[str, Any], track_names: Sequence[str] = ()) -> str:
  """HTML tables of sample metrics: [tracks] values by track, [tracks, tracks] values by pair."""
  per_track, per_pair, other = [], [], []
  for name, value in values.items():
    try:
      ndim = np.asarray(value, float).ndim
    except (TypeError, ValueError):  # not numbers (or ragged): shown as text
      ndim = 0
    {1: per_track, 2: per_pair}.get(ndim, other).append(name)
  n = max([len(values[m]) for m in per_track + per_pair] + [0])
  names = list(track_names) if len(track_names) == n else [f"track{i}" for i in range(n)]

  def table(columns: list[str], rows: list[tuple[str, list[Any]]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["metric"] + columns)
    body = "".join("<tr><th>{}</th>{}</tr>".format(
        _esc(name), "".join(f"<td>{_esc(_format(name, v))}</td>" for v in cells))
        for name, cells in rows)
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

  parts = []
  if per_track:
    parts.append(table(names, [(m, list(values[m])) for m in per_track]))
  pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
  if per_pair and pairs:
    def cell(m: str, i: int, j: int) -> Any:
      try:
        return values[m][i][j]
      except (IndexError, TypeError):
        return float("nan")
    parts.append(table([f"{names[i]}-{names[j]}" for i, j in pairs],
                       [(m, [cell(m, i, j) for i, j in pairs]) for m in per_pair]))
  if other:
    parts.append(table(["value"], [(m, [values[m]]) for m in other]))
  return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .meta { color: #555; }
table.metrics { border-collapse: collapse; margin: 0.5em 0 1em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
table.metrics td { text-align: right; font-variant-numeric: tabular-nums; }
.legend span { display: inline-block; margin-right: 1em; }
.legend i { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
            vertical-align: middle; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(22em, 1fr));
           gap: 1.5em; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 0.3em; }
figure img { width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figure audio { width: 100%; margin-top: 0.3em; }
"""


def build_gallery(samples_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                  num: int | None = None, title: str | None = None,
                  grid: Grid | None = None) -> str:
  """Writes the HTML page of the samples in `samples_dir` (default SAMPLES_DIR/index.html).

  Shows the first `num` MIDI files (all by default), each with its piano-roll PNG (drawn beside
  the MIDI when missing or older), an audio player when a WAV was rendered beside it, and a
  download link; then the folder's metrics.json as tables. Returns the page's path.
  """
  from jaxgan import render, summary  # pylint: disable=import-outside-toplevel
  folder = os.fspath(samples_dir)
  out = os.fspath(out) if out else os.path.join(folder, "index.html")
  base = os.path.dirname(os.path.abspath(out))
  midis = find_midis(folder)[:num]
  grid = grid or Grid()
  cards, track_names = [], None
  for midi in midis:
    stem = os.path.splitext(os.path.basename(midi))[0]
    png = os.path.splitext(midi)[0] + ".png"
    picture = f'<p class="error">{_esc(stem)}: no piano-roll</p>'
    try:
      if not os.path.exists(png) or os.path.getmtime(png) < os.path.getmtime(midi):
        write_pianoroll_png(midi, png, grid=grid)
      if track_names is None:
        track_names = read_midi_roll(midi, grid).track_names
      picture = f'<img src="{_href(png, base)}" alt="piano-roll of {_esc(stem)}">'
    except Exception as e:  # noqa: BLE001 -- one unreadable file must not lose the page
      picture = f'<p class="error">{_esc(os.path.basename(midi))}: {_esc(e)}</p>'
    wav = render.wav_for(midi)
    audio = (f'<audio controls preload="none" src="{_href(wav, base)}"></audio>' if wav else "")
    links = [f'<a href="{_href(midi, base)}" download>MIDI</a>']
    if wav:
      links.append(f'<a href="{_href(wav, base)}" download>WAV</a>')
    cards.append(f'<figure><figcaption>{_esc(stem)}</figcaption>{picture}{audio}'
                 f'<p class="links">{" &middot; ".join(links)}</p></figure>')
  track_names = track_names or ()
  legend = "".join(
      '<span><i style="background: rgb({},{},{})"></i>{}</span>'.format(
          *summary.TRACK_COLOURS[i % len(summary.TRACK_COLOURS)].tolist(), _esc(name))
      for i, name in enumerate(track_names))
  data = read_metrics(folder)
  meta, tables = [], ""
  if data:
    for key in ("step", "num", "seed"):
      if key in data:
        meta.append(f"{_esc(key)} {_esc(data[key])}")
    if isinstance(data.get("metrics"), dict):
      tables = metrics_html(data["metrics"], track_names)
  title = title or f"Samples: {os.path.basename(os.path.abspath(folder))}"
  body = [f"<h1>{_esc(title)}</h1>",
          f'<p class="meta">{len(midis)} samples' + "".join(f" &middot; {m}" for m in meta)
          + "</p>"]
  if tables:
    body.append(f"<h2>Metrics</h2>\n{tables}")
  if legend:
    body.append(f'<p class="legend">{legend}</p>')
  body.append('<div class="samples">\n' + "\n".join(cards) + "\n</div>")
  page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
          + "\n".join(body) + "\n</body>\n</html>\n")
  os.makedirs(base, exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(page)
  return out
