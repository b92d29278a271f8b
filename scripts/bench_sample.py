"""Sampling speed: bars generated per second by the jitted EMA sampler, at batch 256 and 4,096.

  python scripts/bench_sample.py [--configs a.py,b.py] [--batches 256,4096] [--reps 5]
                                 [--run-seconds 5 | --calls N] [--workdir RUN]

For each config, a freshly initialised engine (the weights do not change the speed):
`engine.sample_ema(state, key, num)` is compiled per batch size (timed on its own), called
once to warm up, then --reps runs of --calls calls (by default as many as take about
--run-seconds), with one call in flight while the next is dispatched. The rolls stay on the
device, as the training loop's samples do until they are written.
bars/s = num x bars per sample x calls / seconds.

--workdir RUN adds rows for a trained run, through the user-facing path
`jaxgan.sample.Generator.from_workdir(RUN)` + `jaxgan.sample.sample(gen, key, num)`, which also
draws its latents (a latent walk) outside the compiled generator and copies the rolls back to
the host as numpy; its "compile" is the first call (compile and run).

Output: Markdown on stdout (progress on stderr). Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import _bench_util as bu  # also puts this checkout first on sys.path

CONFIGS = "configs/jsb_musegan.py,configs/musegan_tutorial.py"


def time_calls(call: Callable[[int], Any], args) -> tuple[int, list[float]]:
  """(calls per run, seconds per run): two warm-up calls, then --reps timed runs."""
  import jax  # pylint: disable=import-outside-toplevel
  # One warm-up call: at batch 4,096 a call of the larger models takes tens of seconds on CPU.
  t0 = time.perf_counter()
  jax.block_until_ready(call(0))
  per_call = time.perf_counter() - t0
  calls = args.calls or max(1, round(args.run_seconds / max(per_call, 1e-6)))
  times = []
  for rep in range(args.reps):
    t0 = time.perf_counter()
    prev = None
    for i in range(calls):
      out = call(1 + rep * calls + i)
      # One call in flight while the next is dispatched; waiting on each keeps memory bounded
      # (a run at batch 4,096 would otherwise hold every call's rolls).
      jax.block_until_ready(prev)
      prev = out
    jax.block_until_ready(prev)
    times.append(time.perf_counter() - t0)
    del prev, out
  return calls, times


def memory_limit() -> tuple[int | None, str]:
  """Bytes a computation may use on the first device, and what that figure is."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.default_backend() == "cpu":
    try:
      with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
          if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
      pass
    return None, ""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  return stats.get("bytes_limit"), "device memory"


def gib(n: float) -> str:
  return f"{n / 2**30:.2f}"


def row(label: str, shape: tuple[int, ...], num: int, mem: str, compile_s: float, calls: int,
        times: list[float], note: str) -> list[str]:
  bars = num * shape[0] * calls
  bm, br = bu.spread([bars / t for t in times])
  cm, cr = bu.spread([calls / t for t in times])
  return [label, "x".join(str(d) for d in shape), f"{num:,}", mem, f"{compile_s:.1f}", cm, cr,
          bm, br, f"{len(times)} x {calls}", note]


def bench_engine(path: str, overrides: list[tuple[str, str]], args) -> list[list[str]]:
  """Rows for a freshly initialised engine of one config."""
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxgan import config as config_lib, gan, sharding

  config = config_lib.load_config(path, overrides)
  mesh = sharding.make_mesh(config.train.mesh_data, config.train.mesh_fsdp)
  engine = gan.Engine(config, mesh)
  state = jax.block_until_ready(engine.init(jax.random.PRNGKey(0)))
  keys = jax.random.split(jax.random.PRNGKey(1), 64)
  rows = []
  for num in args.batches:
    bu.log(f"{path}: sample_ema at batch {num}: compiling ...")
    t0 = time.perf_counter()
    # The compiled callable takes (state, key): `num` is static and baked in.
    fn = engine.sample_ema.lower(state, keys[0], num).compile()
    compile_s = time.perf_counter() - t0
    # XLA's own count of the buffers a call needs: a call that cannot fit is reported, not run
    # (on a shared host it would swap or be killed rather than give a figure).
    m = fn.memory_analysis()
    need = (m.temp_size_in_bytes + m.output_size_in_bytes) if m is not None else None
    limit, what = memory_limit()
    mem = gib(need) if need is not None else "?"
    label, shape = f"`{path}` fresh, `sample_ema`", engine.data_shape
    arch = config.model.get("arch", "")
    if need is not None and limit is not None and need > 0.9 * limit and args.memory_check:
      bu.log(f"  skipped: needs {gib(need)} GiB, {gib(limit)} GiB of {what}")
      rows.append([label, "x".join(str(d) for d in shape), f"{num:,}", mem, f"{compile_s:.1f}",
                   f"n/a (needs {gib(need)} GiB, {gib(limit)} GiB of {what})", "", "", "", "",
                   arch])
      continue
    calls, times = time_calls(lambda i: fn(state, keys[i % len(keys)]), args)
    bu.log(f"  {num * engine.data_shape[0] * calls / min(times):,.0f} bars/s at best")
    rows.append(row(label, shape, num, mem, compile_s, calls, times,
                    f"{arch}, rolls left on the device"))
  return rows


def bench_workdir(workdir: str, args) -> list[list[str]]:
  """Rows for a trained run, through jaxgan.sample."""
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxgan import sample as sample_lib

  gen = sample_lib.Generator.from_workdir(workdir)
  shape = tuple(gen.engine.data_shape)
  rows = []
  for num in args.batches:
    bu.log(f"{workdir}: sample() at batch {num}: first call ...")
    t0 = time.perf_counter()
    sample_lib.sample(gen, jax.random.PRNGKey(0), num)
    first_s = time.perf_counter() - t0
    calls, times = time_calls(lambda i: sample_lib.sample(gen, jax.random.PRNGKey(i + 1), num),
                              args)
    rows.append(row(f"workdir at step {gen.step}, `sample()`", shape, num, "-", first_s, calls,
                    times,
                    "latent walk + threshold, rolls copied to host numpy"))
  return rows


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default=CONFIGS,
                 help="comma-separated config files, path[:arg] (default %(default)s); "
                      "'' for none")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every config (repeatable)")
  p.add_argument("--batches", default="256,4096", help="samples per call, comma-separated")
  p.add_argument("--reps", type=int, default=5, help="timed runs per batch size")
  p.add_argument("--calls", type=int, default=None,
                 help="calls per timed run (default: as many as fill --run-seconds)")
  p.add_argument("--run-seconds", type=float, default=5.0,
                 help="target length of a timed run when --calls is not given")
  p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                 help="run batch sizes whose buffers exceed 90 %% of the available memory")
  p.add_argument("--workdir", default=None,
                 help="also time a trained run's generator through jaxgan.sample")
  args = p.parse_args(argv)
  args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
  overrides = []
  for o in args.override:
    if "=" not in o:
      p.error(f"--override {o!r}: expected KEY=VALUE")
    overrides.append(tuple(o.split("=", 1)))
  workdir = os.path.abspath(args.workdir) if args.workdir else None

  os.chdir(bu.REPO)   # config paths are relative to the checkout
  rows = []
  for path in [c.strip() for c in args.configs.split(",") if c.strip()]:
    rows += bench_engine(path, overrides, args)
  if workdir:
    rows += bench_workdir(workdir, args)

  extra = []
  if args.reps < 3:
    extra.append(f"only {args.reps} run(s): a smoke run, not a result")
  lines = bu.header("jaxgan sampling speed", extra) + [""]
  lines += bu.table(
      ["generator", "sample shape (bars x steps x pitches x tracks)", "batch",
       "buffers per call (GiB)", "compile (s)",
       "calls/s median", "calls/s min-max", "bars/s median", "bars/s min-max", "runs x calls",
       "notes"],
      rows, [False, False, True, True, True, True, True, True, True, True, False])
  lines += [
      "",
      "Median and min-max over the runs; every call is waited for. Compile is "
      "`sample_ema.lower(...).compile()` per batch size (for `sample()`: its first call). "
      "bars/s = batch x bars per sample x calls per second. Buffers per call: XLA's "
      "temporaries + output of the compiled sampler (`memory_analysis`); a batch needing more "
      "than 90 % of the memory available is skipped unless `--no-memory-check`.",
  ]
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
