"""`jaxgan profile`: where a train step's time goes, and how close it is to the hardware.

Reports compile time, step time percentiles, examples/s, model FLOPs per step (from XLA's cost
analysis of the compiled step), achieved FLOP/s and MFU against the device's peak (a matmul
probe on the device itself, or a table of known accelerator peaks), the share of wall time spent
waiting for input, peak device memory where the backend reports it; and leaves a
`jax.profiler` trace of a window of steps in the workdir.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import config as config_lib
from jaxgan import gan, paths
from jaxgan import sharding as shard_lib

# Dense bf16 peaks, FLOP/s per chip, from vendor datasheets (no sparsity), by
# `device.device_kind`. TPU kinds are matched exactly: JAX names a v5e "TPU v5 lite", a v5p
# "TPU v5" and a v6e "TPU v6 lite", and a v4i ("TPU v4 lite") is not a v4.
TPU_PEAKS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5": 459e12,
    "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}
# GPU kinds carry the board after the model ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"):
# the longest name the kind starts with wins, so a PCIe or NVL part gets its own (lower) peak.
GPU_PEAKS = {
    "NVIDIA H100": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12, "NVIDIA H200 NVL": 835e12, "NVIDIA B200": 2250e12,
    "NVIDIA A100": 312e12, "NVIDIA L4": 121e12, "NVIDIA A10G": 125e12,
}
KNOWN_PEAKS = {**TPU_PEAKS, **GPU_PEAKS}


def known_peak(kind: str) -> float | None:
  """The datasheet bf16 peak (FLOP/s) of a device of `device_kind` `kind`, or None."""
  if kind in TPU_PEAKS:
    return TPU_PEAKS[kind]
  names = [n for n in GPU_PEAKS if kind == n or kind.startswith(n + " ") or
           kind.startswith(n + "-")]
  return GPU_PEAKS[max(names, key=len)] if names else None


def matmul_peak(device=None, *, size: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
  """Measured FLOP/s of a large float32 matmul on `device`: the practical peak for MFU."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones([size, size], dtype), device)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * size**3 / float(np.median(times))


def device_peak(device=None) -> tuple[float, str]:
  """(peak FLOP/s, where it comes from) of `device`: the datasheet's for a known accelerator,
  else a matmul measured on it."""
  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "")
  peak = known_peak(kind)
  if peak is not None:
    return peak, f"datasheet bf16 peak of {kind}"
  return matmul_peak(device), f"measured float32 matmul on {device.platform} ({kind or 'cpu'})"


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def _critic_flops(engine, state, batch) -> float:
  """FLOPs of one D update (the critic loop's body) as compiled on its own."""
  real = jnp.zeros(batch["pianoroll"].shape[1:], jnp.float32)
  style = jnp.zeros(batch["style"].shape[1:], jnp.int32)
  fn = engine.jit(engine.critic_update)
  compiled = fn.lower(state["g"], state["g_stats"], state["d"], state["d_opt"], real, style,
                      jax.random.PRNGKey(0), jnp.float32(1.0)).compile()
  return _flops(compiled)


def _peak_memory() -> int | None:
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # backends without memory stats
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


# Steps a run takes after (re)starting before train.profile_steps opens its trace window: the
# first steps after the compile fill caches and queues, and would not show the rate a run keeps.
TRACE_WARMUP = 10


class TraceWindow:
  """A `jax.profiler` trace of `steps` train steps from step `first`, in WORKDIR/profile: the
  window `jaxgan train` opens with train.profile_steps (process 0 writes it; the others do
  nothing)."""

  def __init__(self, directory: str, first: int, steps: int, enabled: bool = True):
    self.directory, self.first, self.steps = directory, first, steps
    self.enabled = enabled and steps > 0
    self.active = False

  @classmethod
  def for_run(cls, config, workdir: str, start: int) -> "TraceWindow":
    """The window of a run resumed (or started) at step `start`: from train.profile_start,
    or -1 = TRACE_WARMUP steps later (fewer when the run is too short for that)."""
    tc = config.train
    steps = int(tc.get("profile_steps", 0))
    first = int(tc.get("profile_start", -1))
    if first < 0:
      first = start + max(0, min(TRACE_WARMUP, tc.num_steps - start - steps))
    return cls(paths.join(workdir, "profile"), first, steps,
               enabled=jax.process_index() == 0 and first >= start)

  def update(self, step: int, state: Any) -> None:
    """Call before running step `step` (the count of steps done); `state` is waited for
    before the trace closes, so that the window's device work is in it."""
    if not self.enabled:
      return
    if step == self.first and not self.active:
      jax.profiler.start_trace(self.directory)
      self.active = True
    elif self.active and step >= self.first + self.steps:
      self.close(state)

  def close(self, state: Any = None) -> None:
    """Ends the trace if it is open (a run that stops inside the window)."""
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      self.enabled = False


INPUTS = ("pipeline", "synthetic")


def synthetic_batches(config, mesh) -> Iterator[dict[str, jax.Array]]:
  """One random device-resident batch, repeated: the step alone, with no input pipeline (and no
  TensorFlow), e.g. on an accelerator machine without the data stack."""
  shape = (config.loss.n_critic, config.train.global_batch) + config_lib.data_shape(config)
  sharding = shard_lib.batch(mesh, leading=1)
  make = jax.jit(lambda key: {
      "pianoroll": jax.random.bernoulli(key, 0.05, shape).astype(jnp.uint8),
      "style": jnp.zeros(shape[:2], jnp.int32)}, out_shardings=sharding)
  batch = make(jax.random.PRNGKey(config.train.seed))
  while True:
    yield batch


def steady_step(config) -> int:
  """The first step counter past the critic warm-up that is not a periodic many-critic step.

  MuseGAN's schedule (loss.critic_warmup_steps / critic_every_n) runs critic_warmup_n D updates
  per step early on: 100 on musegan_lpd5, minutes per step on a CPU, and not the rate a run
  trains at. Timing starts here unless asked otherwise.
  """
  lc = config.loss
  step = max(int(lc.critic_warmup_steps), 0)
  every = int(lc.critic_every_n)
  if every > 0 and step % every == 0:
    step += 1
  return step


def profile(config, workdir: str, *, steps: int = 50, warmup: int = 5, trace_steps: int = 5,
            input: str = "pipeline",
            start_step: int | None = None) -> dict[str, Any]:
  """Times `steps` train steps of `config` after `warmup`; returns the figures as a dict.

  input="synthetic" feeds one random device-resident batch instead of the tf.data pipeline.
  The state's step counter starts at `start_step` (default `steady_step(config)`), so that the
  step-dependent schedules (critic count, slope) are those of a run at that step.
  """
  if input not in INPUTS:
    raise ValueError(f"input={input!r}; allowed: {', '.join(INPUTS)}")
  if start_step is None:
    start_step = steady_step(config)
  if start_step < 0:
    raise ValueError(f"start_step={start_step}; allowed: an integer >= 0")
  workdir = paths.resolve(workdir)
  paths.makedirs(workdir)
  tc = config.train
  mesh = shard_lib.make_mesh(tc.mesh_data, tc.mesh_fsdp)
  config_lib.check_batch(config, mesh, jax.process_count())
  # Deferred: TensorFlow starts only when a profile runs.
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  pipeline.resolve_styles(config)
  engine = gan.Engine(config, mesh)
  state = engine.init(jax.jit(lambda: jax.random.PRNGKey(tc.seed),
                              out_shardings=shard_lib.replicated(mesh))())
  state = dict(state, step=jax.device_put(jnp.asarray(start_step, state["step"].dtype),
                                          state["step"].sharding))
  if input == "synthetic":
    batches = synthetic_batches(config, mesh)
  else:
    batches = pipeline.train_iterator(config, mesh, checked=True)
  batch = next(batches)
  t = time.perf_counter()
  compiled = engine.step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  flops = _flops(compiled)

  for _ in range(warmup):
    state, metrics = compiled(state, next(batches))
  jax.block_until_ready(state)

  step_times, wait_times, critic_counts = [], [], []
  # Handed to jax.profiler as it is (a gs:// workdir too): XLA's profiler writes it itself.
  trace_dir = paths.join(workdir, "profile")
  # One trace and one JSON per run: process 0 writes them, the others only time their steps.
  is_lead = jax.process_index() == 0
  trace_steps = trace_steps if is_lead else 0
  trace_from = max(0, steps - trace_steps) if trace_steps else steps
  wall = time.perf_counter()
  for i in range(steps):
    if i == trace_from and trace_steps:
      jax.profiler.start_trace(trace_dir)
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    with jax.profiler.StepTraceAnnotation("train", step_num=i):
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
    t2 = time.perf_counter()
    wait_times.append(t1 - t0)
    step_times.append(t2 - t1)
    critic_counts.append(int(metrics["n_critic"]))
  wall = time.perf_counter() - wall
  if trace_steps:
    jax.profiler.stop_trace()

  # XLA's cost analysis counts the body of the critic loop (a while loop) once, whatever its trip
  # count; with loss.reuse_fake the last critic update is outside the loop and counts once more
  # (and a fixed single update has no loop). Add (or take off) the FLOPs of one critic update,
  # compiled on its own, for every update the timed steps ran beyond those counted.
  n_critic_mean = float(np.mean(critic_counts))
  counted = 1
  if config.loss.reuse_fake and not engine.single_critic:
    counted = 2
  extra = n_critic_mean - counted
  critic_flops = _critic_flops(engine, state, batch) if extra else 0.0
  flops += extra * critic_flops
  peak, peak_source = device_peak()
  devices = jax.device_count()
  examples = tc.global_batch * config.loss.n_critic
  p50 = float(np.percentile(step_times, 50))
  # cost_analysis describes the step as compiled for one device's shard under SPMD.
  flops_per_step = flops * (devices if mesh.size > 1 else 1)
  result = {
      "config": config.get("name", ""),
      "device": f"{devices} x {jax.devices()[0].device_kind}",
      "jax": jax.__version__,
      "input": input,
      "global_batch": tc.global_batch,
      "n_critic": config.loss.n_critic,
      "start_step": int(start_step),
      "compile_s": compile_s,
      "step_ms_p50": 1e3 * p50,
      "step_ms_p90": 1e3 * float(np.percentile(step_times, 90)),
      "step_ms_max": 1e3 * float(np.max(step_times)),
      "steps_per_s": 1.0 / p50,
      "examples_per_s": examples / p50,
      "gflop_per_step": flops_per_step / 1e9,
      "n_critic_mean": n_critic_mean,
      "critic_gflop": critic_flops / 1e9,
      "flop_accounting": (f"step {extra:+g} x critic update (XLA's cost analysis counts "
                          f"{counted} of the {n_critic_mean:g})"
                          if extra else "whole step, every critic update counted"),
      "achieved_gflop_s": flops_per_step / p50 / 1e9,
      "peak_gflop_s": peak * devices / 1e9,
      "peak_source": peak_source,
      "mfu": flops_per_step / p50 / (peak * devices),
      "input_wait_fraction": float(np.sum(wait_times) / wall),
      "peak_memory_bytes": _peak_memory(),
      "trace_dir": trace_dir if trace_steps else None,
  }
  if is_lead:
    paths.write_atomic(paths.join(workdir, "profile.json"), json.dumps(result, indent=2))
  return result


def format_table(r: dict[str, Any]) -> str:
  mem = r["peak_memory_bytes"]
  rows = [
      ("device", r["device"]), ("jax", r["jax"]),
      ("input", r.get("input", "pipeline")),
      ("global batch x n_critic", f"{r['global_batch']} x {r['n_critic']}"),
      ("timed from step", f"{r.get('start_step', 0)} (+ warm-up), {r['n_critic_mean']:g} D "
                          f"updates per step on average"),
      ("compile time", f"{r['compile_s']:.1f} s"),
      ("step time p50 / p90 / max", f"{r['step_ms_p50']:.1f} / {r['step_ms_p90']:.1f} / "
                                    f"{r['step_ms_max']:.1f} ms"),
      ("steps/s", f"{r['steps_per_s']:.2f}"), ("examples/s", f"{r['examples_per_s']:.0f}"),
      ("model FLOPs per step", f"{r['gflop_per_step']:.3f} GFLOP ({r['flop_accounting']})"),
      ("achieved", f"{r['achieved_gflop_s']:.1f} GFLOP/s"),
      ("peak", f"{r['peak_gflop_s']:.1f} GFLOP/s ({r['peak_source']})"),
      ("MFU", f"{100 * r['mfu']:.1f} %"),
      ("input wait", f"{100 * r['input_wait_fraction']:.1f} % of wall time"),
      ("peak device memory", f"{mem / 2**20:.1f} MiB" if mem else "not reported by backend"),
      ("trace", r["trace_dir"] or "off"),
  ]
  width = max(len(k) for k, _ in rows)
  lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
  lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
  return "\n".join(lines)
