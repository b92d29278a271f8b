"""jaxgan vs a PyTorch twin of the ISMIR 2019 tutorial MuseGAN, on the same CPU, in one process.

  python scripts/bench_vs_torch.py [--reps 5] [--steps 20] [--skip-compile] [--json out.json]

Training: one iteration = 1 D update with WGAN-GP (lambda 10, double backward) + 1 G update, batch
16, Adam 1e-3 (0.5, 0.9), for torch eager, torch.compile (inductor) and jaxgan's jitted step.
Sampling: generator alone at batch 256, torch eval + no_grad vs jaxgan's jitted EMA sampler, both
returning boolean rolls. Data are random binary piano-rolls from a fixed seed: this measures speed
only. Contenders run interleaved (A, B, C, A, B, C, ...) so that background load hits all of them
alike; each run is a warm-up then N timed steps; compile times are reported separately. Output is
Markdown (paste into BENCHMARKS.md); `--json` also writes every raw run. A contender that fails
to build is reported as n/a with the reason (BENCH_DEBUG=1 prints the traceback).

Needs the `bench` extra (PyTorch CPU).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, REPO]   # the torch twin next to this file, jaxgan from this checkout

# Inductor compiles in this process instead of a pool of workers that would outlive the compile
# and share the two cores with the timed runs.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
# A fresh inductor cache, so that torch.compile's column is a cold compile, as jaxgan's is.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
  _INDUCTOR_CACHE = tempfile.mkdtemp(prefix="bench_inductor_")
  os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE
  atexit.register(shutil.rmtree, _INDUCTOR_CACHE, True)

import torch  # noqa: E402  (after the path set-up above)

import torch_musegan as tm  # noqa: E402
from _bench_util import command_line, cpu_model, fmt  # noqa: E402

SAMPLE_BATCH = 256
DATA_SEED = 0
POOL = 8          # distinct batches cycled through, placed in memory before timing
DENSITY = 0.05    # fraction of active cells in the random piano-rolls
SETTLE_S = 0.2    # pause between runs so the previous contender's worker threads go idle


# ------------------------------------------------------------------------------------ contenders


@dataclass
class Contender:
  """One implementation under test: `run(n)` does n steps and returns when all are finished."""
  name: str
  compiled: bool                  # whether setup_s is a compile time worth reporting
  steps: int                      # timed steps per run
  warmup: int                     # untimed steps before each run
  units_per_step: int             # examples (training) or bars (sampling) per step
  setup: Callable[[], None] | None = None   # builds and compiles; raising marks it n/a
  run: Callable[[int], None] | None = None
  note: str = ""
  setup_s: float | None = None
  error: str | None = None
  times: list[float] = field(default_factory=list)   # seconds per timed run

  def rates(self) -> list[float]:
    return [self.steps / t for t in self.times]


def _first_line(e: BaseException) -> str:
  """A one-line reason for a table cell, with the checkout's location left out."""
  text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
  return text.replace(REPO + os.sep, "").replace(REPO, ".")[:160]


def random_rolls(seed: int) -> np.ndarray:
  """bool [POOL, batch, bars, steps, pitches, tracks], jaxgan's layout."""
  rng = np.random.default_rng(seed)
  shape = (POOL, tm.BATCH, tm.N_BARS, tm.STEPS_PER_BAR, tm.N_PITCHES, tm.N_TRACKS)
  return rng.random(shape) < DENSITY


def to_torch_layout(rolls: np.ndarray) -> list[torch.Tensor]:
  """[P, B, bars, steps, pitches, tracks] -> P tensors [B, tracks, bars * steps, pitches], 0/1."""
  x = rolls.transpose(0, 1, 5, 2, 3, 4).reshape(
      rolls.shape[0], rolls.shape[1], tm.N_TRACKS, tm.N_BARS * tm.STEPS_PER_BAR, tm.N_PITCHES)
  return [torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)) for b in x]


def torch_train(name: str, compiled: bool, rolls: np.ndarray, steps: int) -> Contender:
  c = Contender(name, compiled, steps, warmup=2, units_per_step=tm.BATCH)
  data = to_torch_layout(rolls)
  state: dict[str, Any] = {"i": 0}

  def setup():
    trainer = tm.Trainer(seed=0)
    if compiled:
      g_c, d_c = torch.compile(trainer.generator), torch.compile(trainer.discriminator)
      trainer.g_fn, trainer.d_fn, trainer.gp_d_fn = g_c, d_c, d_c
      try:
        trainer.step(data[0])
        c.note = "G and D compiled, GP through compiled D"
      except RuntimeError as e:
        if "double backward" not in str(e):
          raise
        # aot_autograd cannot differentiate its own backward, so the penalty term, whose
        # gradient needs a double backward, goes through the eager D (same parameters).
        trainer.gp_d_fn = trainer.discriminator
        c.note = ("G and D compiled; GP term through eager D (aot_autograd has no double "
                  "backward)")
      trainer.step(data[1])   # compiles whatever the first call did not reach
    state["trainer"] = trainer

  def run(n: int):
    trainer = state["trainer"]
    for _ in range(n):
      trainer.step(data[state["i"] % POOL])
      state["i"] += 1

  c.setup, c.run = setup, run
  return c


def torch_sample(name: str, compiled: bool, calls: int) -> Contender:
  c = Contender(name, compiled, calls, warmup=1, units_per_step=SAMPLE_BATCH * tm.N_BARS)
  state: dict[str, Any] = {}

  def setup():
    torch.manual_seed(1)
    gen = tm.Generator().eval()
    # A separate compiled module: reusing the training one would switch its cache to dynamic
    # shapes once it sees the second batch size.
    state["g"] = torch.compile(copy.deepcopy(gen), dynamic=False) if compiled else gen
    run(1)

  def run(n: int):
    with torch.no_grad():
      for _ in range(n):
        rolls = state["g"](torch.randn(SAMPLE_BATCH, tm.LATENT)) > 0.5
    del rolls

  c.setup, c.run = setup, run
  return c


class JaxSide:
  """jaxgan's engine for the tutorial config; built once, shared by the train and sample runs."""

  def __init__(self, config_path: str, overrides: list[str]):
    self.config_path, self.overrides = config_path, overrides
    self.engine = self.state = None
    self.info: dict[str, Any] = {}

  def build(self):
    if self.engine is not None:
      return
    # pylint: disable=import-outside-toplevel
    import jax
    from jaxgan import config as config_lib, gan, sharding
    self.jax = jax
    config = config_lib.load_config(self.config_path, self.overrides)
    mesh = sharding.make_mesh(-1, 1)
    t0 = time.perf_counter()
    engine = gan.Engine(config, mesh)
    self.state = jax.block_until_ready(engine.init(jax.random.PRNGKey(0)))
    self.engine = engine   # only once init worked: a failed build is retried, not half-used
    self.info["init_s"] = time.perf_counter() - t0
    count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
    self.info["g_params"] = count(self.state["g"])
    self.info["d_params"] = count(self.state["d"])
    self.info["n_critic"] = int(config.loss.n_critic)
    self.info["reuse_fake"] = bool(config.loss.get("reuse_fake", False))
    self.info["global_batch"] = int(config.train.global_batch)
    self.info["data_shape"] = tuple(int(d) for d in self.engine.data_shape)
    self.info["model"] = {k: config.model.get(k) for k in ("arch", "conv_impl", "dtype", "binarize")
                          if k in config.model}
    self.mesh, self.sharding = mesh, sharding

  def batches(self, rolls: np.ndarray) -> list[dict[str, Any]]:
    """Device-placed batches: uint8 rolls (0 silent, 1 held, 2 onset) and int32 styles."""
    n_critic, batch = self.info["n_critic"], self.info["global_batch"]
    if (batch, *self.info["data_shape"]) != rolls.shape[1:]:
      raise ValueError(f"jaxgan config batch/data shape {(batch, *self.info['data_shape'])} "
                       f"differs from the tutorial's {rolls.shape[1:]}")
    prev = np.pad(rolls, [(0, 0)] * 3 + [(1, 0), (0, 0), (0, 0)])[:, :, :, :-1]
    coded = rolls.astype(np.uint8) + (rolls & ~prev).astype(np.uint8)
    placement = self.sharding.batch(self.mesh, leading=1)
    out = []
    for i in range(POOL):
      idx = [(i + k) % POOL for k in range(n_critic)]
      batch_np = {"pianoroll": coded[idx], "style": np.zeros((n_critic, batch), np.int32)}
      out.append(self.jax.device_put(batch_np, placement))
    return out


def jax_train(name: str, side: JaxSide, rolls: np.ndarray, steps: int) -> Contender:
  c = Contender(name, True, steps, warmup=5, units_per_step=tm.BATCH)
  state: dict[str, Any] = {"i": 0}

  def setup():
    side.build()
    data = side.batches(rolls)
    c.units_per_step = side.info["global_batch"] * side.info["n_critic"]
    t0 = time.perf_counter()
    step = side.engine.step.lower(side.state, data[0]).compile()
    c.setup_s = time.perf_counter() - t0   # compile only; init is reported on its own
    state.update(step=step, data=data)
    run(1)
    m = side.info["model"]
    extra = "EMA update" if side.info["reuse_fake"] else "EMA update, fresh G forward"
    c.note = ", ".join(f"{k}={v}" for k, v in m.items()) + f" (+ {extra})"

  def run(n: int):
    step, data = state["step"], state["data"]
    s = side.state
    for _ in range(n):
      s, metrics = step(s, data[state["i"] % POOL])
      state["i"] += 1
    side.jax.block_until_ready((s, metrics))
    side.state = s   # the step donates its input state

  c.setup, c.run = setup, run
  return c


def jax_sample(name: str, side: JaxSide, calls: int) -> Contender:
  c = Contender(name, True, calls, warmup=3, units_per_step=SAMPLE_BATCH * tm.N_BARS)
  state: dict[str, Any] = {"i": 0}

  def setup():
    side.build()
    jax = side.jax
    c.units_per_step = SAMPLE_BATCH * side.info["data_shape"][0]
    t0 = time.perf_counter()
    lowered = side.engine.sample_ema.lower(side.state, jax.random.PRNGKey(1), SAMPLE_BATCH)
    state["sample"] = lowered.compile()   # the compiled callable drops the static `num`
    c.setup_s = time.perf_counter() - t0
    state["keys"] = list(jax.random.split(jax.random.PRNGKey(2), 64))
    run(1)
    c.note = "EMA generator, bool rolls"

  def run(n: int):
    sample, s, keys = state["sample"], side.state, state["keys"]
    out = None
    for _ in range(n):
      out = sample(s, keys[state["i"] % len(keys)])
      state["i"] += 1
    side.jax.block_until_ready(out)

  c.setup, c.run = setup, run
  return c


# ------------------------------------------------------------------------------------- protocol


def set_up(contenders: list[Contender]) -> None:
  for c in contenders:
    print(f"  setting up {c.name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
      c.setup()
    except Exception as e:  # pylint: disable=broad-except
      c.error = _first_line(e)
      if os.environ.get("BENCH_DEBUG"):
        traceback.print_exc()
      print(f"    n/a: {c.error}", file=sys.stderr, flush=True)
      continue
    if c.setup_s is None and c.compiled:
      c.setup_s = time.perf_counter() - t0


def measure(contenders: list[Contender], reps: int) -> None:
  """Interleaved: every rep runs each live contender once (warm-up, then timed steps)."""
  live = [c for c in contenders if c.error is None]
  for rep in range(reps):
    for c in live:
      if c.error is not None:
        continue
      time.sleep(SETTLE_S)
      try:
        c.run(c.warmup)
        t0 = time.perf_counter()
        c.run(c.steps)
        c.times.append(time.perf_counter() - t0)
      except Exception as e:  # pylint: disable=broad-except
        c.error = _first_line(e)
        continue
      print(f"  rep {rep + 1}/{reps} {c.name}: {c.steps / c.times[-1]:.3f} per s",
            file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------- report


def summary(c: Contender) -> dict[str, Any]:
  r = c.rates()
  if not r:
    return {"name": c.name, "error": c.error or "no runs", "note": c.note}
  return {
      "name": c.name, "note": c.note, "setup_s": c.setup_s, "runs": len(r),
      "steps_per_run": c.steps, "units_per_step": c.units_per_step,
      "rate_median": statistics.median(r), "rate_min": min(r), "rate_max": max(r),
      "raw_seconds": c.times, "error": c.error,
  }


def _na(s: dict[str, Any]) -> str:
  return f"n/a ({s['error']})"


def rate_table(rows: list[dict[str, Any]], unit: str, step_word: str) -> list[str]:
  out = [f"| implementation | compile (s) | {step_word}/s median | {step_word}/s min-max | "
         f"{unit}/s median | {unit}/s min-max | runs x {step_word} | notes |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
  for s in rows:
    if "rate_median" not in s:
      out.append(f"| {s['name']} | | {_na(s)} | | | | | {s.get('note', '')} |")
      continue
    u = s["units_per_step"]
    setup = "-" if s["setup_s"] is None else f"{s['setup_s']:.1f}"
    out.append(
        f"| {s['name']} | {setup} | {fmt(s['rate_median'])} | "
        f"{fmt(s['rate_min'])}-{fmt(s['rate_max'])} | {fmt(s['rate_median'] * u)} | "
        f"{fmt(s['rate_min'] * u)}-{fmt(s['rate_max'] * u)} | "
        f"{s['runs']} x {s['steps_per_run']} | {s['note']} |")
  return out


def ratio(num: dict[str, Any], den: dict[str, Any]) -> dict[str, Any]:
  """Ratio of throughputs (units/s): of the medians, and the worst/best case over the runs."""
  if "rate_median" not in num or "rate_median" not in den:
    return {"error": num.get("error") or den.get("error")}
  un, ud = num["units_per_step"], den["units_per_step"]
  return {
      "median": num["rate_median"] * un / (den["rate_median"] * ud),
      "worst": num["rate_min"] * un / (den["rate_max"] * ud),
      "best": num["rate_max"] * un / (den["rate_min"] * ud),
  }


def ratio_table(rows: list[tuple[str, dict[str, Any], float | None]]) -> list[str]:
  """Rows of (label, ratio, target or None); the target column appears if any row has one."""
  with_target = any(t for _, _, t in rows)
  out = ["| ratio (throughput) | median | worst-best |" + (" target |" if with_target else ""),
         "| --- | ---: | ---: |" + (" --- |" if with_target else "")]
  for label, r, target in rows:
    if "median" not in r:
      row = f"| {label} | n/a ({r['error']}) | |"
    else:
      row = f"| {label} | {r['median']:.2f}x | {r['worst']:.2f}x-{r['best']:.2f}x |"
    if with_target:
      if target and "median" in r:
        row += f" >= {target:g}x: {'met' if r['median'] >= target else 'not met'} |"
      else:
        row += f" >= {target:g}x |" if target else " |"
    out.append(row)
  return out


def machine() -> dict[str, Any]:
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  try:
    import flax  # pylint: disable=import-outside-toplevel
    flax_version = flax.__version__
  except ImportError:
    flax_version = "n/a"
  return {
      "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
      "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "flax": flax_version, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
      "jax_backend": jax.default_backend(),
  }


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (>= 5 to report)")
  p.add_argument("--steps", type=int, default=20, help="timed torch training steps per run")
  p.add_argument("--jax-steps", type=int, default=None,
                 help="timed jaxgan training steps per run (default 10 x --steps)")
  p.add_argument("--sample-calls", type=int, default=None,
                 help="timed torch sampler calls per run (default --steps // 2, at least 3)")
  p.add_argument("--jax-sample-calls", type=int, default=None,
                 help="timed jaxgan sampler calls per run (default 10 x --sample-calls)")
  p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile")
  p.add_argument("--skip-train", action="store_true", help="sampling table only")
  p.add_argument("--skip-sample", action="store_true", help="training tables only")
  p.add_argument("--jax-config", default="configs/musegan_tutorial.py")
  p.add_argument("--jax-override", action="append", default=[], metavar="--config.KEY=VALUE",
                 help="override for the jaxgan config (repeatable)")
  p.add_argument("--json", metavar="PATH", help="also write the summary and raw runs as JSON")
  args = p.parse_args(argv)
  jax_steps = args.jax_steps or 10 * args.steps
  sample_calls = args.sample_calls or max(3, args.steps // 2)
  jax_sample_calls = args.jax_sample_calls or 10 * sample_calls

  torch.set_num_threads(os.cpu_count())
  info = machine()

  # The twin must be the tutorial's network, not something near it.
  g_count, d_count = tm.count_params(tm.Generator()), tm.count_params(tm.Discriminator())
  assert g_count == tm.G_PARAMS, f"torch G has {g_count} params, the tutorial {tm.G_PARAMS}"
  assert d_count == tm.D_PARAMS, f"torch D has {d_count} params, the tutorial {tm.D_PARAMS}"

  rolls = random_rolls(DATA_SEED)
  side = JaxSide(args.jax_config, args.jax_override)
  results: dict[str, Any] = {"machine": info, "command": command_line(), "args": vars(args)}

  train_c: list[Contender] = []
  if not args.skip_train:
    train_c.append(torch_train("torch eager", False, rolls, args.steps))
    if not args.skip_compile:
      train_c.append(torch_train("torch.compile (inductor)", True, rolls, args.steps))
    train_c.append(jax_train("jaxgan", side, rolls, jax_steps))
    print("training:", file=sys.stderr)
    set_up(train_c)
    measure(train_c, args.reps)

  sample_c: list[Contender] = []
  if not args.skip_sample:
    sample_c.append(torch_sample("torch eager (eval, no_grad)", False, sample_calls))
    if not args.skip_compile:
      sample_c.append(torch_sample("torch.compile (eval, no_grad)", True, sample_calls))
    sample_c.append(jax_sample("jaxgan sample_ema", side, jax_sample_calls))
    print("sampling:", file=sys.stderr)
    set_up(sample_c)
    measure(sample_c, args.reps)

  lines = [
      "## jaxgan vs PyTorch (ISMIR 2019 tutorial MuseGAN), same CPU",
      "",
      f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
      f"load average {info['loadavg_1m_at_start']} at start",
      f"- date: {info['date_utc']}",
      f"- versions: Python {info['python']}, jax {info['jax']} / jaxlib {info['jaxlib']} "
      f"({info['jax_backend']}), flax {info['flax']}, torch {info['torch']} "
      f"({info['torch_threads']} threads)",
      f"- command: `{results['command']}`",
      f"- torch twin: G {g_count:,} / D {d_count:,} params (asserted equal to the tutorial's)",
  ]
  if side.engine is not None:
    ji = side.info
    lines.append(f"- jaxgan: G {ji['g_params']:,} / D {ji['d_params']:,} params, data "
                 f"{ji['data_shape']}, batch {ji['global_batch']}, n_critic {ji['n_critic']}, "
                 f"init {ji['init_s']:.1f} s")
  if args.reps < 5:
    lines.append(f"- only {args.reps} rep(s): a smoke run, not a result")

  if train_c:
    rows = [summary(c) for c in train_c]
    by = {s["name"]: s for s in rows}
    pairs = [("jaxgan / torch eager", ratio(by["jaxgan"], by["torch eager"]))]
    if "torch.compile (inductor)" in by:
      pairs.append(("jaxgan / torch.compile",
                    ratio(by["jaxgan"], by["torch.compile (inductor)"])))
      pairs.append(("torch.compile / torch eager",
                    ratio(by["torch.compile (inductor)"], by["torch eager"])))
    lines += ["", "### Training: 1 D step (WGAN-GP, lambda 10) + 1 G step, batch 16", ""]
    lines += rate_table(rows, "examples", "steps")
    lines += [""] + ratio_table([(label, r, None) for label, r in pairs])
    results["train"] = rows
    results["train_ratios"] = dict(pairs)

  if sample_c:
    rows = [summary(c) for c in sample_c]
    by = {s["name"]: s for s in rows}
    jx = by["jaxgan sample_ema"]
    pairs = [("jaxgan / torch eager", ratio(jx, by["torch eager (eval, no_grad)"]))]
    if "torch.compile (eval, no_grad)" in by:
      pairs.append(("jaxgan / torch.compile", ratio(jx, by["torch.compile (eval, no_grad)"])))
    lines += ["", f"### Sampling: generator alone, batch {SAMPLE_BATCH}, bool rolls", ""]
    lines += rate_table(rows, "bars", "calls")
    lines += [""] + ratio_table([(label, r, 20.0 if i == 0 else None)
                                 for i, (label, r) in enumerate(pairs)])
    results["sample"] = rows
    results["sample_ratios"] = dict(pairs)

  lines += [
      "",
      "Median and min-max over the interleaved runs; each run = warm-up steps, then the timed "
      "steps. The compile column is one-off (torch.compile: first two steps; jaxgan: "
      "`lower().compile()` of the step and of the sampler). jaxgan's step also updates "
      "an EMA of G, which the tutorial does not; with loss.reuse_fake off it also runs a "
      "second G forward for the G update (see the notes column).",
  ]
  print("\n".join(lines))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, default=str)
  return 0


if __name__ == "__main__":
  sys.exit(main())
