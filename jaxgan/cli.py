"""The `jaxgan` command line: a thin layer over functions a Python user can call directly.

Each command imports what it uses when it runs, so that `jaxgan --help` and a refused
workdir answer before JAX and TensorFlow have started.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import jaxgan  # noqa: F401  (quiets TensorFlow's start-up banners before anything imports it)

# What `jaxgan prepare NAME` builds (jaxgan/data/builders.py; a test keeps the two in step).
DATASETS = {
    "jsb_chorales": "Bach's chorales from the music21 corpus, every meter",
    "jsb_chorales_standard": "the standard JSB split (229/76/77 chorales) with Bach's bar "
                             "lines; jsb_chorales_standard/music21_extras adds the rest",
    "music21_styles": "music21 corpus pieces labelled by composer (for style conditioning)",
    "midi_folder": "your own folder of .mid/.midi files (--manual-dir)",
}


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("multi-host (or set JAXGAN_COORDINATOR/NUM_PROCESSES/PROCESS_ID)")
  g.add_argument("--coordinator", help="host:port of process 0, e.g. 10.0.0.2:1234")
  g.add_argument("--num-processes", type=int, help="number of processes in the run")
  g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  g.add_argument("--distributed", action="store_true",
                 help="auto-detect a Cloud TPU pod or SLURM job and join it")


def _add_render_flags(p: argparse.ArgumentParser, *, choose: bool = True) -> None:
  g = p.add_argument_group("audio (the FluidSynth program and a General MIDI SoundFont)")
  if choose:
    g.add_argument("--render", choices=("wav",), help="also write a .wav beside each .mid")
  g.add_argument("--soundfont", help=".sf2 file (default $JAXGAN_SOUNDFONT or a standard path)")
  g.add_argument("--sample-rate", type=int, default=44100, help="Hz")


def _render_wavs(command: str, args, midis: list[str], out_dir: str | None = None) -> int:
  from jaxgan import render  # pylint: disable=import-outside-toplevel
  wavs, errors = render.render_many(midis, out_dir=out_dir, soundfont=args.soundfont,
                                    sample_rate=args.sample_rate)
  for e in errors:
    print(f"jaxgan {command}: {e}", file=sys.stderr)
  print(f"rendered {len(wavs)} WAV files" + (f", {len(errors)} failed" if errors else ""))
  return 1 if errors else 0


def _init_distributed(args) -> None:
  from jaxgan import distributed  # pylint: disable=import-outside-toplevel
  if distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                            auto=args.distributed):
    distributed.quiet_followers()


def _generator(args):
  """The generator a sampling command uses: --pretrained NAME or --workdir DIR."""
  from jaxgan import sample  # pylint: disable=import-outside-toplevel
  from jaxgan.config import ConfigError  # pylint: disable=import-outside-toplevel
  pretrained = getattr(args, "pretrained", None)
  if bool(pretrained) == bool(args.workdir):
    raise ConfigError(f"give either --workdir DIR or --pretrained NAME "
                      f"({', '.join(sorted(sample.PRETRAINED))})")
  if pretrained:
    return sample.Generator.from_export(sample.pretrained_path(pretrained))
  return sample.Generator.from_workdir(args.workdir, use_ema=not getattr(args, "no_ema", False),
                                       best=getattr(args, "best", False))


def _add_source_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_mutually_exclusive_group()
  g.add_argument("--workdir", help="a train workdir (its latest checkpoint) or a "
                                   "generator export (jaxgan export)")
  g.add_argument("--pretrained", metavar="NAME",
                 help="a generator shipped with jaxgan: jsb (Bach chorales, four voices)")


def cmd_export(args, extra) -> int:
  from jaxgan import paths, sample  # pylint: disable=import-outside-toplevel
  gen = sample.Generator.from_workdir(args.workdir, use_ema=not args.no_ema, best=args.best)
  if args.calibrate:
    from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
    gen = evaluate.calibrate_sampler(gen, hold_split=args.hold_split)
    m = gen.config.model
    print(f"model.syncopation_weights={m.syncopation_weights}, onset_gain={m.onset_gain} "
          f"(and {len(m.interval_weights)} interval_weights)")
  metrics = None
  if args.metrics:
    import json  # pylint: disable=import-outside-toplevel
    metrics = json.loads(paths.read_text(args.metrics))   # an eval JSON, maybe in a bucket
  out = sample.export(gen, args.out, dtype=args.dtype, metrics=metrics)
  size = sum(paths.size(paths.join(out, n)) for n in paths.listdir(out))
  print(f"wrote {out}: generator of step {gen.step}, {size / 2**20:.1f} MiB")
  return 0


def cmd_prepare(args, extra) -> int:
  from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
  try:
    summary = prepare.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                              max_songs=args.max_songs, progress=not args.quiet)
  except prepare.DataWriteError as e:  # nothing half-built is left; the message says where
    print(f"jaxgan prepare: {e}", file=sys.stderr)
    return 1
  print(prepare.format_summary(summary))
  return 0


def _with_split_mode(config, data_mode: str | None):
  """`config` with --data-mode, when given, as data.split_mode (saved with the run)."""
  if data_mode:
    config.data.split_mode = data_mode
  return config


def cmd_train(args, extra) -> int:
  if not (args.coordinator or args.distributed or os.environ.get("JAXGAN_COORDINATOR")):
    # A busy workdir is refused before the slow imports (the lock is taken in train).
    from jaxgan import lock  # pylint: disable=import-outside-toplevel
    lock.WorkdirLock(args.workdir, force=args.force).check()
  from jaxgan import config as config_lib  # pylint: disable=import-outside-toplevel
  _init_distributed(args)
  config = _with_split_mode(config_lib.load_config(args.config, extra), args.data_mode)
  from jaxgan import train  # pylint: disable=import-outside-toplevel
  train.train_and_evaluate(config, args.workdir, progress=not args.quiet, force=args.force)
  return 0


def cmd_profile(args, extra) -> int:
  from jaxgan import config as config_lib  # pylint: disable=import-outside-toplevel
  _init_distributed(args)
  config = _with_split_mode(config_lib.load_config(args.config, extra), args.data_mode)
  from jaxgan import profiling  # pylint: disable=import-outside-toplevel
  result = profiling.profile(config, args.workdir, steps=args.steps, warmup=args.warmup,
                             trace_steps=args.trace_steps, input=args.input,
                             start_step=args.start_step)
  if args.json:
    import json  # pylint: disable=import-outside-toplevel
    print(json.dumps(result, indent=2))
  else:
    print(profiling.format_table(result))
  return 0


def cmd_compile(args, extra) -> int:
  # A dry run: the host's CPU is JAX's backend, the TPU devices exist for the compiler only.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from jaxgan import config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config(args.config, extra)
  from jaxgan import aot  # pylint: disable=import-outside-toplevel
  try:
    report = aot.compile_for_topology(config, args.topology, slices=args.slices,
                                      sampler=not args.no_sampler, name=args.config)
  except aot.AotError as e:  # no libtpu, or more HBM than the chip has: one line, exit 1
    if getattr(e, "report", None):
      print(aot.format_report(e.report))
    print(f"jaxgan compile: {e}", file=sys.stderr)
    return 1
  if args.json:
    import json  # pylint: disable=import-outside-toplevel
    print(json.dumps(report, indent=2))
  else:
    print(aot.format_report(report))
  return 0


def _write_samples(gen, out: str, *, num: int, seed: int = 0, tempo: float = 100.0,
                   **options) -> list[str]:
  """`jaxgan sample`'s output: `num` pieces as MIDI files, samples.png and metrics.json in
  `out`, and the metrics table printed; `options` go to `sample.sample`."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from jaxgan import evaluate, metrics, sample  # pylint: disable=import-outside-toplevel
  key = jax.random.PRNGKey(seed)
  rolls = []
  chunk = 256
  for start in tqdm(range(0, num, chunk), disable=num <= chunk, unit="chunk"):
    rolls.append(sample.sample(gen, jax.random.fold_in(key, start), min(chunk, num - start),
                               **options))
  rolls = np.concatenate(rolls)
  paths = sample.write_samples(gen, rolls, out, tempo=tempo)
  spec = evaluate.roll_spec(gen.config, gen.tracks)
  values = dict(metrics.track_metrics(rolls, spec))
  values.update(metrics.pair_metrics(rolls, spec))
  evaluate.write_json({"step": gen.step, "num": len(rolls), "seed": seed,
                       "metrics": {k: np.asarray(v).tolist() for k, v in values.items()}},
                      os.path.join(out, "metrics.json"))
  print(metrics.summary_table({"generated": values}, spec))
  print(f"wrote {len(paths)} MIDI files, samples.png and metrics.json to {out} "
        f"(checkpoint step {gen.step})")
  return paths


def _sample_workdir(workdir: str, out: str, *, num: int, seed: int) -> list[str]:
  """`jaxgan sample --workdir WORKDIR --out OUT --num NUM --seed SEED`."""
  from jaxgan import sample  # pylint: disable=import-outside-toplevel
  return _write_samples(sample.Generator.from_workdir(workdir), out, num=num, seed=seed)


def cmd_sample(args, extra) -> int:
  from jaxgan import render, sample  # pylint: disable=import-outside-toplevel
  if args.render:  # a missing program or SoundFont fails before sampling, not after
    render.check_setup(args.soundfont, args.sample_rate)
  gen = _generator(args)
  sample.check_options(gen.config, num=args.num, bars=args.bars)
  if args.style is not None:
    gen.style_id(args.style)  # an unknown style fails here, listing the known ones
  if not args.temperature > 0:
    from jaxgan.config import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"--temperature={args.temperature} must be > 0")
  paths = _write_samples(gen, args.out, num=args.num, seed=args.seed, tempo=args.tempo,
                         bars=args.bars, truncation=args.truncation, binarize=args.binarize,
                         style=args.style, temperature=args.temperature)
  if args.render:
    return _render_wavs("sample", args, paths)
  return 0


def _restore(args, extra, command: str) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  from jaxgan import inpaint  # pylint: disable=import-outside-toplevel
  from jaxgan.midi.io import MidiError  # pylint: disable=import-outside-toplevel
  gen = _generator(args)
  if args.style is not None:
    gen.style_id(args.style)
  key = jax.random.PRNGKey(args.seed)
  try:
    if command == "inpaint":
      midi = inpaint.inpaint(gen, args.input, inpaint.parse_bars(args.bars), key,
                             candidates=args.candidates, style=args.style)
    else:
      given = [g.strip() for g in args.given.split(",") if g.strip()]
      midi = inpaint.accompany(gen, args.input, given, key, candidates=args.candidates,
                               style=args.style)
  except MidiError as e:
    print(f"jaxgan {command}: {e}", file=sys.stderr)
    return 1
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  midi.dump(args.out)
  how = ("conditional generator" if gen.engine.cond["context"]
         else f"best of {args.candidates} unconditional samples")
  print(f"wrote {args.out} (checkpoint step {gen.step}, {how})")
  if args.render:
    return _render_wavs(command, args, [args.out])
  return 0


def cmd_inpaint(args, extra) -> int:
  return _restore(args, extra, "inpaint")


def cmd_accompany(args, extra) -> int:
  return _restore(args, extra, "accompany")


def cmd_render(args, extra) -> int:
  return _render_wavs("render", args, args.files, out_dir=args.out)


def cmd_gallery(args, extra) -> int:
  from jaxgan import gallery, paths, render  # pylint: disable=import-outside-toplevel
  if not (args.workdir or args.samples):
    args.command_parser.error("give --workdir, --samples or both")
  # The page, its MIDI files, pictures and WAVs are local files (a browser opens them).
  folder = paths.local_only(args.samples or os.path.join(args.workdir, "gallery"),
                            "the gallery's folder (give a local --samples DIR)")
  if args.render:
    render.check_setup(args.soundfont, args.sample_rate)
  if not gallery.find_midis(folder):
    if not args.workdir:
      raise FileNotFoundError(f"no MIDI files in {folder}: give --workdir to sample some")
    # Exactly what `jaxgan sample` does: MIDI files, samples.png and metrics.json.
    _sample_workdir(args.workdir, folder, num=args.num or 8, seed=0)
  midis = gallery.find_midis(folder)[:args.num]
  stale = render.stale(midis) if args.render else []
  code = _render_wavs("gallery", args, stale) if stale else 0
  grid = gallery.run_grid(args.workdir) if args.workdir else None
  page = gallery.build_gallery(folder, args.out, num=args.num, grid=grid)
  print(f"wrote {page} ({len(midis)} samples)")
  return code


def cmd_eval(args, extra) -> int:
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  gen = _generator(args)
  result = evaluate.evaluate(gen, split=args.split, num=args.num, seed=args.seed)
  print(result["table"])
  for name, v in sorted(result.get("set_comparison", {}).items()):
    print(f"  {name:<28} OA {v['OA']:.3f}  KL {v['KL']:.3f}")
  from jaxgan import paths  # pylint: disable=import-outside-toplevel
  out = args.out or paths.join(args.workdir or ".", f"eval_{result['step']}.json")
  evaluate.write_json(result, out)
  print(f"wrote {out}")
  return 0


def _version() -> str:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    return metadata.version("jaxgan")
  except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    return "unknown (not installed)"


def _unknown_arguments(args: argparse.Namespace, extra: list[str]) -> list[str]:
  """What argparse left over that the command does not take: everything, or for train and
  profile whatever is not a --config.KEY=VALUE / --config.KEY VALUE override."""
  if not getattr(args, "overrides", False):
    return list(extra)
  unknown, i = [], 0
  while i < len(extra):
    arg = extra[i]
    if arg.startswith("--config.") and len(arg) > len("--config."):
      i += 1 if "=" in arg else 2
    else:
      unknown.append(arg)
      i += 1
  return unknown


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxgan", description="Train GANs that compose symbolic music, and use them.")
  parser.add_argument("--version", action="version", version=f"jaxgan {_version()}")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("prepare", help="build a data set (TFDS) from MIDI files or the corpus",
                     epilog="data sets:\n" + "\n".join(f"  {k:<23} {v}"
                                                       for k, v in DATASETS.items()),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("name", help=" | ".join(DATASETS))
  p.add_argument("--manual-dir", help="folder of .mid/.midi files (midi_folder)")
  p.add_argument("--data-dir", help="where data sets live (default $JAXGAN_DATA_DIR or "
                                    "~/tensorflow_datasets)")
  p.add_argument("--max-songs", type=int, help="cap the number of songs (quick trials)")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  p.set_defaults(func=cmd_prepare)

  p = sub.add_parser("train", help="train (or resume) a GAN from a config file",
                     epilog="Any config value can be overridden: --config.train.num_steps=200")
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs, config.json")
  p.add_argument("--data-mode", choices=("shard", "replicate"),
                 help="sets data.split_mode: shard (default): each host reads 1/P of the "
                      "data; replicate: every host reads all and batches do not depend on "
                      "the host count")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("--force", action="store_true",
                 help="take the workdir's lock even if another trainer seems to hold it")
  _add_distributed_flags(p)
  p.set_defaults(func=cmd_train, overrides=True)

  p = sub.add_parser("compile", help="dry run: compile the train step for a TPU topology "
                                     "(HBM per device, FLOPs, estimated step time)",
                     epilog="Needs libtpu (pip install 'jax[tpu]'), not a TPU. Any config "
                            "value can be overridden: --config.train.global_batch=256")
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--topology", required=True,
                 help="CHIP:AxB[xC], CHIP one of v4, v5e, v5p, v6e (e.g. v5e:4x4)")
  p.add_argument("--slices", type=int, default=1,
                 help="multi-slice: this many slices, folded into the data axis")
  p.add_argument("--no-sampler", action="store_true", help="compile the train step only")
  p.add_argument("--json", action="store_true", help="machine-readable output")
  p.set_defaults(func=cmd_compile, overrides=True)

  p = sub.add_parser("sample", help="write MIDI files, a PNG grid and metrics from a run")
  _add_source_flags(p)
  p.add_argument("--num", type=int, default=16, help="number of pieces")
  p.add_argument("--bars", type=int, help="bars per piece (default: one trained phrase)")
  p.add_argument("--out", default="samples", help="output folder")
  p.add_argument("--seed", type=int, default=0, help="random seed of the latents")
  p.add_argument("--truncation", type=float, help="truncate latents to [-t, t]")
  p.add_argument("--binarize", default="threshold", choices=("threshold", "bernoulli"),
                 help="threshold: notes where the output > 0; bernoulli: drawn with its "
                      "probability")
  p.add_argument("--temperature", type=float, default=1.0,
                 help="bernoulli: < 1 sharper, > 1 noisier (1 = the model's probabilities)")
  p.add_argument("--tempo", type=float, default=100.0, help="quarter notes per minute")
  p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
  p.add_argument("--style", help="a style of a style-conditioned run (default: random)")
  p.add_argument("--best", action="store_true",
                 help="use the checkpoint kept by train.best_metric, not the latest")
  _add_render_flags(p)
  p.set_defaults(func=cmd_sample)

  for name, text in (("inpaint", "regenerate bars of a MIDI file (music restoration)"),
                     ("accompany", "generate the other tracks around given ones")):
    p = sub.add_parser(name, help=text)
    _add_source_flags(p)
    p.add_argument("--input", required=True, help="the MIDI file")
    if name == "inpaint":
      p.add_argument("--bars", required=True, help="bars to regenerate, 1-based: 5-8 or 5-8,12")
    else:
      p.add_argument("--given", required=True,
                     help="track name(s) the file holds, comma-separated (e.g. soprano)")
    p.add_argument("--out", required=True, help="the MIDI file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed of the fill")
    p.add_argument("--candidates", type=int, default=64,
                   help="runs without conditioning: latents searched for the best fit")
    p.add_argument("--style", help="a style of a style-conditioned run")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
    p.add_argument("--best", action="store_true",
                   help="use the checkpoint kept by train.best_metric, not the latest")
    _add_render_flags(p)
    p.set_defaults(func=cmd_inpaint if name == "inpaint" else cmd_accompany)

  p = sub.add_parser("render", help="MIDI files to WAV audio (FluidSynth, General MIDI)")
  p.add_argument("files", nargs="+", metavar="FILE.mid", help="MIDI files to render")
  p.add_argument("--out", help="folder for the WAVs (default: beside each MIDI file)")
  _add_render_flags(p, choose=False)
  p.set_defaults(func=cmd_render)

  p = sub.add_parser("gallery", help="an HTML page of samples: piano-rolls, audio, metrics")
  p.add_argument("--workdir", help="a train workdir; samples it when --samples has none")
  p.add_argument("--samples", help="folder of samples (default WORKDIR/gallery)")
  p.add_argument("--out", help="the HTML file (default SAMPLES/index.html)")
  p.add_argument("--num", type=int, help="samples to show (and to make when there are none: 8)")
  _add_render_flags(p)
  p.set_defaults(func=cmd_gallery)

  p = sub.add_parser("eval", help="musical metrics: data vs generated, per track")
  _add_source_flags(p)
  p.add_argument("--split", default="test", help="the data split to compare with")
  p.add_argument("--num", type=int, default=256, help="number of generated pieces")
  p.add_argument("--seed", type=int, default=0, help="random seed of the latents")
  p.add_argument("--out", help="JSON path (default WORKDIR/eval_STEP.json)")
  p.add_argument("--best", action="store_true",
                 help="use the checkpoint kept by train.best_metric, not the latest")
  p.set_defaults(func=cmd_eval)

  p = sub.add_parser("export", help="write a run's generator alone (for sharing, "
                                    "--workdir of sample/inpaint/accompany)")
  p.add_argument("--workdir", required=True, help="a train workdir")
  p.add_argument("--out", required=True, help="the folder to write")
  p.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                 help="weights as stored (they load as float32)")
  p.add_argument("--metrics", help="a JSON file of figures to ship beside the weights")
  p.add_argument("--no-ema", action="store_true", help="export the raw generator, not its EMA")
  p.add_argument("--best", action="store_true",
                 help="export the checkpoint kept by train.best_metric, not the latest")
  p.add_argument("--calibrate", action="store_true",
                 help="voices models: scale model.hold_shares (with model.hold_prior), then "
                      "set model.interval_weights, syncopation_weights and onset_gain so "
                      "that free samples hold chords, leap, tie notes over beats and sing "
                      "as many notes per bar as the data (about 40 minutes on a 2-core CPU "
                      "with the hold prior; needs the data set)")
  p.add_argument("--hold-split", default="train",
                 help="with --calibrate and model.hold_prior: the split whose held chords per "
                      "bar free samples match")
  p.set_defaults(func=cmd_export)

  p = sub.add_parser("profile", help="time train steps: compile, p50/p90, FLOPs, MFU, trace")
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--workdir", default="runs/profile", help="where the trace and JSON go")
  p.add_argument("--steps", type=int, default=50, help="timed steps after warm-up")
  p.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones")
  p.add_argument("--trace-steps", type=int, default=5, help="steps in the profiler trace")
  p.add_argument("--data-mode", choices=("shard", "replicate"),
                 help="as for jaxgan train")
  p.add_argument("--input", default="pipeline", choices=("pipeline", "synthetic"),
                 help="synthetic: one random on-device batch, timing the step alone")
  p.add_argument("--start-step", type=int, default=None,
                 help="step counter of the first step (default: past the critic warm-up, "
                      "so that the steady state is timed; 0 times the warm-up)")
  p.add_argument("--json", action="store_true", help="machine-readable output")
  _add_distributed_flags(p)
  p.set_defaults(func=cmd_profile, overrides=True)
  for command_parser in sub.choices.values():  # so that main can answer with its usage
    command_parser.set_defaults(command_parser=command_parser)
  return parser


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  unknown = _unknown_arguments(args, extra)
  if unknown:  # argparse's convention: usage and the error, exit status 2
    args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  from jaxgan import runtime  # pylint: disable=import-outside-toplevel
  runtime.skip_absent_tpu()
  from jaxgan.config import ConfigError  # pylint: disable=import-outside-toplevel
  from jaxgan.lock import WorkdirBusy  # pylint: disable=import-outside-toplevel
  from jaxgan.errors import NonFiniteError  # pylint: disable=import-outside-toplevel
  from jaxgan.render import RenderError  # pylint: disable=import-outside-toplevel
  try:
    return args.func(args, extra)
  except ConfigError as e:  # a bad key or value: one clear line, exit status 2
    print(f"jaxgan {args.command}: {e}", file=sys.stderr)
    return 2
  except RenderError as e:  # no FluidSynth or SoundFont: the message says how to install them
    print(f"jaxgan {args.command}: {e}", file=sys.stderr)
    return 1
  except FileNotFoundError as e:  # a missing workdir, checkpoint or shipped model: one line
    print(f"jaxgan {args.command}: {e}", file=sys.stderr)
    return 1
  except (WorkdirBusy, NonFiniteError) as e:  # the message names the holder / the step
    print(f"jaxgan {args.command}: {e}", file=sys.stderr)
    return 1
  except OSError as e:  # a failed write (errors.WriteError names what, where and why)
    print(f"jaxgan {args.command}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
