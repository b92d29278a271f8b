"""Data speed: MIDI -> song -> piano-roll / tokens on the JSB chorales, and the input pipeline.

  python scripts/bench_data.py [--max-songs N] [--reps 3] [--batches 200] [--data-dir DIR]

(a) Representations. The chorales of the music21 corpus are rendered to MIDI bytes once, as
the jsb_chorales build does (not timed: music21's parser is not jaxgan's); then, over all of
them, timed: `load_song` (MIDI bytes -> Song, at the data set's grid and settings),
`to_pianoroll` (Song -> dense piano-roll) and `encode` (Song -> event tokens). Reported as
songs/s and notes/s, median and min-max over --reps passes.

(b) Pipeline. `make_dataset` of configs/jsb_musegan.py at train.global_batch=64 on the built
jsb_chorales data set (built first by `prepare`, which reuses a matching build), and on the
synthetic source at the same shapes; the same through `train_iterator` (adds the placement of
each batch on the devices). One batch is one train step's input, n_critic x global_batch
examples. After --warmup batches, --reps runs of --batches batches each. Loading the song
table (the pipeline's start-up) is timed on its own.

Output: Markdown on stdout (progress on stderr). Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from typing import Any

import numpy as np

import _bench_util as bu  # also puts this checkout first on sys.path

CONFIG = "configs/jsb_musegan.py"


# ------------------------------------------------------------------------------ representations


@dataclasses.dataclass
class Stage:
  """One conversion timed over the whole set of songs."""
  name: str
  what: str                                  # input -> output, for the table
  times: list[float] = dataclasses.field(default_factory=list)
  songs: int = 0
  notes: int = 0
  size: str = ""                             # what it read or produced, for the size column


def midi_bytes(max_songs: int | None, workers: int | None) -> tuple[list[Any], list[str]]:
  """The chorales as corpus.Converted (MIDI bytes and voices); and the names of failures."""
  from jaxgan.data import builders, corpus  # pylint: disable=import-outside-toplevel
  pieces = corpus.chorale_pieces("bach")
  if max_songs is not None:
    pieces = pieces[:max_songs]
  converted, failed = [], []
  for result in builders.convert_pieces(pieces, num_workers=workers):
    (converted if result.midi is not None else failed).append(result)
  return converted, [f"{r.name} ({r.reason})" for r in failed]


def bench_representations(args) -> tuple[list[str], list[str]]:
  """Table lines and header notes for part (a)."""
  # pylint: disable=import-outside-toplevel
  from jaxgan.data import builders, corpus
  from jaxgan.midi import MidiConfig, MidiError, encode, load_song, to_pianoroll
  from jaxgan.midi.song import TRACK

  bu.log("rendering chorales to MIDI (music21, not timed) ...")
  t0 = time.perf_counter()
  converted, failed = midi_bytes(args.max_songs, args.workers)
  render_s = time.perf_counter() - t0
  # The jsb_chorales build's MidiConfig: 4 voices as "parts", every meter kept.
  config = MidiConfig(steps_per_beat=args.steps_per_beat, track_mode="parts",
                      track_names=corpus.VOICES, meters=())
  full_tracks = config.tracks()
  # A chorale with a silent voice has fewer MIDI tracks: it is read with a config naming the
  # voices it has (as the build does), then its notes go back to their voices' tracks.
  items = []
  for r in converted:
    voices = tuple(r.voices) or tuple(range(len(full_tracks)))
    cfg = config if voices == tuple(range(len(full_tracks))) else dataclasses.replace(
        config, track_names=tuple(config.track_names[v] for v in voices))
    items.append((r.name, r.midi, cfg, voices))

  load = Stage("load_song", "MIDI bytes -> Song")
  roll = Stage("to_pianoroll", "Song -> uint8 piano-roll")
  tok = Stage("encode", "Song -> int32 tokens")
  songs, skipped = [], []
  # Pass 0 is a warm-up (first calls, caches) and gives the songs; passes 1.. are timed.
  for rep in range(args.reps + 1):
    out = []
    t0 = time.perf_counter()
    for name, data, cfg, _ in items:
      try:
        out.append(load_song(data, config=cfg, name=name)[0])
      except MidiError as e:
        if rep == 0:
          skipped.append(f"{name} ({e.reason})")
        out.append(None)
    if rep == 0:
      songs = out
    else:
      load.times.append(time.perf_counter() - t0)
  kept = []
  for song, (_, _, _, voices) in zip(songs, items):
    if song is None:
      continue
    if len(song.tracks) != len(full_tracks):
      notes = np.array(song.notes, np.int32, copy=True)
      notes[:, TRACK] = np.asarray(voices, np.int32)[notes[:, TRACK]]
      song = dataclasses.replace(song, notes=notes, tracks=full_tracks)
    kept.append(song)
  notes = sum(s.num_notes for s in kept)
  load.songs, load.notes = len(items), notes   # rejected files took their time too
  load.size = f"{sum(len(d) for _, d, _, _ in items) / 2**20:.2f} MiB of MIDI in"
  vocab = builders.vocabulary_for(config, [s.time_signature for s in kept])

  for stage, fn in ((roll, lambda s: to_pianoroll(s, config)), (tok, lambda s: encode(s, vocab))):
    size = 0
    for rep in range(args.reps + 1):
      t0 = time.perf_counter()
      outs = [fn(s) for s in kept]
      if rep == 0:
        size = sum(int(o.size) for o in outs)
      else:
        stage.times.append(time.perf_counter() - t0)
      del outs
    stage.songs, stage.notes = len(kept), notes
    stage.size = (f"{size / 2**20:.1f} M cells out" if stage is roll
                  else f"{size:,} tokens out (vocabulary {len(vocab)})")

  rows = []
  for s in (load, roll, tok):
    sm, sr = bu.spread([s.songs / t for t in s.times])
    nm, nr = bu.spread([s.notes / t for t in s.times])
    rows.append([f"`{s.name}`", s.what, f"{s.songs:,}", f"{s.notes:,}", sm, sr, nm, nr,
                 f"{len(s.times)}", s.size])
  lines = bu.table(
      ["stage", "conversion", "songs", "notes", "songs/s median", "songs/s min-max",
       "notes/s median", "notes/s min-max", "passes", "size"],
      rows, [False, False, True, True, True, True, True, True, True, False])
  notes_ = [f"(a) {len(items)} chorales rendered to MIDI by music21 in {render_s:.1f} s "
            f"(not timed below); grid {args.steps_per_beat} steps per beat, 4 voice tracks"]
  if failed:
    notes_.append(f"(a) music21 could not render {len(failed)}: {', '.join(failed[:5])}"
                  + (" ..." if len(failed) > 5 else ""))
  if skipped:
    notes_.append(f"(a) load_song rejected {len(skipped)}: {', '.join(skipped[:5])}"
                  + (" ..." if len(skipped) > 5 else ""))
  return lines, notes_


# ------------------------------------------------------------------------------------- pipeline


def _cpu_seconds() -> float:
  """CPU time of this process, all threads (tf.data's included)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def time_batches(it, warmup: int, batches: int, reps: int) -> tuple[list[float], list[float]]:
  """Wall and CPU seconds for each of `reps` runs of `batches` batches, after `warmup` batches.

  CPU time is what a training step loses to the pipeline when both share the cores.
  """
  import jax  # pylint: disable=import-outside-toplevel
  last = None
  for _ in range(warmup):
    last = next(it)
  jax.block_until_ready(last)
  times, cpu = [], []
  for _ in range(reps):
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for _ in range(batches):
      last = next(it)
    # train_iterator hands back device arrays: a batch counts once it is on the device.
    jax.block_until_ready(last)
    times.append(time.perf_counter() - t0)
    cpu.append(_cpu_seconds() - c0)
  return times, cpu


def bench_pipeline(args) -> tuple[list[str], list[str]]:
  """Table lines and header notes for part (b)."""
  # pylint: disable=import-outside-toplevel
  from jaxgan import config as config_lib, sharding
  from jaxgan.data import pipeline
  from jaxgan.data.prepare import prepare

  data_dir = args.data_dir or None
  bu.log("preparing jsb_chorales (reused when already built) ...")
  summary = prepare("jsb_chorales", data_dir=data_dir, max_songs=args.build_max_songs,
                    progress=False)
  how = "reused" if summary["reused"] else f"built in {summary['seconds']:.0f} s"
  notes = [f"(b) jsb_chorales: {summary['songs']} songs ({how}, "
           f"{summary['splits']['train']['songs']} in train)"]
  base = [("train.global_batch", str(args.global_batch))]
  if data_dir:
    base.append(("data.data_dir", data_dir))
  base += [tuple(o.split("=", 1)) for o in args.override]
  rows = []
  for source in ("jsb_chorales", "synthetic"):
    config = config_lib.load_config(args.config, base + [("data.name", source)])
    per_batch = config.train.global_batch * config.loss.n_critic
    bu.log(f"pipeline on {source} ...")
    t0 = time.perf_counter()
    table = pipeline.load_song_table(config, config.data.split)
    startup = time.perf_counter() - t0
    ds = pipeline.make_dataset(config, table=table, process_index=0, process_count=1)
    runs = {"make_dataset": time_batches(ds.as_numpy_iterator(), args.warmup, args.batches,
                                         args.reps)}
    mesh = sharding.make_mesh(config.train.mesh_data, config.train.mesh_fsdp)
    runs["train_iterator"] = time_batches(pipeline.train_iterator(config, mesh), args.warmup,
                                          args.batches, args.reps)
    for how_, (times, cpu) in runs.items():
      bm, br = bu.spread([args.batches / t for t in times])
      em, er = bu.spread([args.batches * per_batch / t for t in times])
      cm, cr = bu.spread([1e3 * c / args.batches for c in cpu])
      rows.append([source, f"`{how_}`", f"{startup:.2f}", f"{len(table.windows):,}",
                   f"{config.loss.n_critic} x {config.train.global_batch}", bm, br, em, er,
                   cm, cr, f"{len(times)} x {args.batches}"])
  lines = bu.table(
      ["source", "iterator", "table load (s)", "windows", "examples per batch",
       "batches/s median", "batches/s min-max", "examples/s median", "examples/s min-max",
       "CPU ms per batch median", "CPU ms min-max", "runs x batches"],
      rows, [False, False] + [True] * 10)
  return lines, notes


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--max-songs", type=int, default=None,
                 help="(a) the first N chorales (default: all, about 350)")
  p.add_argument("--steps-per-beat", type=int, default=12,
                 help="(a) grid of load_song (default 12, the jsb_chorales build's)")
  p.add_argument("--workers", type=int, default=None,
                 help="(a) processes rendering with music21 (default: all usable cores)")
  p.add_argument("--reps", type=int, default=3,
                 help="timed passes (a, after one warm-up pass) / runs (b); median reported")
  p.add_argument("--batches", type=int, default=200, help="(b) batches per timed run")
  p.add_argument("--warmup", type=int, default=20, help="(b) batches before timing")
  p.add_argument("--global-batch", type=int, default=64, help="(b) train.global_batch")
  p.add_argument("--config", default=CONFIG, help="(b) config file (default %(default)s)")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                 help="(b) config override, e.g. data.prefetch=4 (repeatable)")
  p.add_argument("--data-dir", default="",
                 help="(b) where jsb_chorales is (or gets) built (default $JAXGAN_DATA_DIR "
                      "or ~/tensorflow_datasets)")
  p.add_argument("--build-max-songs", type=int, default=None,
                 help="(b) build jsb_chorales from at most N files: quick trials only; a "
                      "stored build made otherwise is rebuilt, so use it with --data-dir")
  p.add_argument("--skip-midi", action="store_true", help="leave out (a)")
  p.add_argument("--skip-pipeline", action="store_true", help="leave out (b)")
  args = p.parse_args(argv)
  for o in args.override:
    if "=" not in o:
      p.error(f"--override {o!r}: expected KEY=VALUE")

  os.chdir(bu.REPO)   # config paths are relative to the checkout
  extra, sections = [], []
  if not args.skip_midi:
    lines, notes = bench_representations(args)
    extra += notes
    sections += ["", "### (a) MIDI -> representations, JSB chorales", ""] + lines
  if not args.skip_pipeline:
    lines, notes = bench_pipeline(args)
    extra += notes
    sections += ["", f"### (b) Input pipeline, {args.config}, global batch "
                 f"{args.global_batch}", ""] + lines
  if args.reps < 3:
    extra.append(f"only {args.reps} pass(es): a smoke run, not a result")
  out = bu.header("jaxgan data speed", extra) + sections + [
      "",
      "Median and min-max over the passes/runs. (a) is single-threaded Python/numpy per song; "
      "(b) runs tf.data's threads over all cores, after warm-up, and `train_iterator` adds "
      "the host-to-device placement of each batch.",
  ]
  print("\n".join(out))
  return 0


if __name__ == "__main__":   # the music21 rendering pool spawns processes
  sys.exit(main())
