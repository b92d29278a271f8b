"""`jaxgan compile`: compile a config's train step for a TPU slice on a machine without one.

libtpu (`pip install "jax[tpu]"`) describes any TPU topology without the hardware
(`jax.experimental.topologies`); the real train step and EMA sampler are compiled for a mesh
built on those devices, exactly as `jaxgan train` would build it there. XLA then says how much
HBM each device needs (arguments, temporaries, outputs), how many FLOPs a step costs, and, on
TPU, its own estimate of the step time: a config that does not fit, or a batch that does not
split over the slice, fails here in a minute instead of on a rented pod.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

from jaxgan import config as config_lib
from jaxgan import engines, gan, profiling
from jaxgan import sharding as shard_lib

GIB = 2**30
# Per-chip HBM from the Cloud TPU system-architecture pages. v4 and v5p chips hold two
# TensorCores that JAX drives as one device (megacore), so a device has the whole chip's HBM.
CHIPS = {
    "v4": {"device_kind": "TPU v4", "hbm_gib": 32, "megacore": True},
    "v5e": {"device_kind": "TPU v5 lite", "hbm_gib": 16, "megacore": False},
    "v5p": {"device_kind": "TPU v5", "hbm_gib": 95, "megacore": True},
    "v6e": {"device_kind": "TPU v6 lite", "hbm_gib": 32, "megacore": False},
}
EXAMPLES = "v4:2x2x1, v5e:4x4, v5p:2x2x1, v6e:4x4"
_TOPOLOGY = re.compile(r"^(?P<chip>[a-z0-9]+):(?P<shape>[0-9]+(?:x[0-9]+){1,2})$")


class AotError(Exception):
  """A dry run that cannot go on for a reason outside the config (exit status 1)."""


class LibtpuMissing(AotError):
  """libtpu, which describes TPU topologies, is not installed."""


class OutOfMemory(AotError):
  """A compiled function needs more HBM per device than the chip has; `report` holds the
  figures that were measured."""

  def __init__(self, message: str, report: dict[str, Any] | None = None):
    super().__init__(message)
    self.report = report


def parse_topology(topology: str) -> tuple[str, tuple[int, ...]]:
  """"v5e:4x4" -> ("v5e", (4, 4)); ConfigError naming the accepted chips otherwise."""
  m = _TOPOLOGY.match(topology.strip().lower())
  if not m or m["chip"] not in CHIPS:
    raise config_lib.ConfigError(
        f"--topology={topology!r} is not a known TPU topology; accepted: CHIP:AxB[xC] with "
        f"CHIP one of {', '.join(CHIPS)} (e.g. {EXAMPLES}; a v5litepod-16 is v5e:4x4)")
  return m["chip"], tuple(int(x) for x in m["shape"].split("x"))


def _check_libtpu() -> None:
  if importlib.util.find_spec("libtpu") is None:
    raise LibtpuMissing(
        f"libtpu is not installed, and it alone describes TPU topologies: "
        f"pip install \"jax[tpu]=={jax.__version__}\" (or pip install -e '.[tpu]'), ~700 MB")


@contextlib.contextmanager
def _quiet_stderr():
  """Silences what libtpu prints on file descriptor 2 while it starts up: on a machine without
  TPUs it warns that it cannot find the TPU VM's metadata, which a dry run does not need."""
  try:
    saved = os.dup(2)
  except OSError:  # no file descriptor 2 to silence
    yield
    return
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def topology_devices(topology: str, slices: int = 1) -> list:
  """The compile-only TPU devices of `slices` slices of `topology` (e.g. "v5e:4x4")."""
  chip, shape = parse_topology(topology)
  if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
    raise config_lib.ConfigError(f"--slices={slices!r} must be a positive integer")
  _check_libtpu()
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  kwargs: dict[str, Any] = {}
  if CHIPS[chip]["megacore"]:
    kwargs["chip_config_name"] = "megacore"   # one JAX device per chip, as on a real slice
  chips = 1
  for n in shape:
    chips *= n
  if chips < 4:
    # libtpu's default host is 2x2 chips; a smaller slice is one host of that many chips.
    kwargs["chips_per_host_bounds"] = tuple(shape) + (1,) * (3 - len(shape))
  if slices > 1:
    kwargs["num_slices"] = slices
  name = f"{chip}:{'x'.join(map(str, shape))}"
  try:
    with _quiet_stderr():
      desc = topologies.get_topology_desc(platform="tpu", topology_name=name, **kwargs)
  except TypeError as e:  # a jax without num_slices (or chips_per_host_bounds)
    raise config_lib.ConfigError(
        f"--slices={slices}: this jax {jax.__version__} cannot describe multi-slice "
        f"topologies ({e})") from None
  except RuntimeError as e:  # JaxRuntimeError: libtpu refuses the shape
    if "not installed" in str(e):
      raise LibtpuMissing(f"{e}: pip install \"jax[tpu]=={jax.__version__}\"") from None
    raise config_lib.ConfigError(
        f"--topology={topology!r}: libtpu refuses it: {str(e).splitlines()[0]}") from None
  devices = list(desc.devices)
  if slices > 1 and shard_lib.num_slices(devices) != slices:
    raise config_lib.ConfigError(
        f"--slices={slices}: libtpu {_libtpu_version()} gave devices of "
        f"{shard_lib.num_slices(devices)} slice(s); multi-slice dry runs need a libtpu that "
        f"describes slices")
  return devices


def _libtpu_version() -> str:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    return metadata.version("libtpu")
  except metadata.PackageNotFoundError:
    return "(unknown version)"


def _memory(compiled) -> dict[str, int]:
  """Bytes per device of a compiled function; total counts donated (aliased) outputs once."""
  m = compiled.memory_analysis()
  out = {
      "arguments": int(m.argument_size_in_bytes),
      "temporaries": int(m.temp_size_in_bytes),
      "outputs": int(m.output_size_in_bytes),
      "aliased": int(m.alias_size_in_bytes),
      "code": int(m.generated_code_size_in_bytes),
  }
  out["total"] = (out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
                  + out["code"])
  return out


def _cost(compiled) -> tuple[float, float | None]:
  """(FLOPs per device, XLA's estimated seconds or None) of a compiled function."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  seconds = cost.get("optimal_seconds")
  return float(cost.get("flops", 0.0)), (float(seconds) if seconds and seconds > 0 else None)


def _compile(fn, args: tuple, what: str, chip: str):
  """`fn.lower(*args).compile()`; XLA's out-of-HBM refusal becomes OutOfMemory."""
  try:
    return fn.lower(*args).compile()
  except RuntimeError as e:  # JaxRuntimeError
    text = str(e)
    if "RESOURCE_EXHAUSTED" not in text:
      raise
    first = text.splitlines()[0].replace("RESOURCE_EXHAUSTED: ", "")
    raise OutOfMemory(
        f"the {what} does not fit in the {CHIPS[chip]['hbm_gib']} GiB of HBM of a "
        f"{CHIPS[chip]['device_kind']} device: {first} (reduce train.global_batch or the "
        f"model, or add chips / train.mesh_fsdp)") from None


def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The train step's batch as shapes with the batch sharding (see pipeline.train_iterator)."""
  shape = (config.loss.n_critic, config.train.global_batch) + config_lib.data_shape(config)
  sharding = shard_lib.batch(mesh, leading=1)
  return {"pianoroll": jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=sharding),
          "style": jax.ShapeDtypeStruct(shape[:2], jnp.int32, sharding=sharding)}


def _resolve_data_facts(config) -> list[str]:
  """What `jaxgan train` reads from the data set before building the engine; a data set not
  built on this machine leaves the defaults, with a note (the shapes barely depend on them)."""
  # Deferred: TensorFlow starts only when a data set is read.
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  notes = []
  d = config.data
  try:
    pipeline.resolve_styles(config)
  except config_lib.ConfigError:
    raise
  except Exception as e:  # an unbuilt data set: its style names (and their count) are unknown
    raise config_lib.ConfigError(
        f"conditioning.style: the style names of data set {d.name!r} are not known here "
        f"({type(e).__name__}); build it or give them, e.g. "
        f"--config.conditioning.styles=\"('a', 'b')\"") from None
  if d.name != "synthetic":
    try:
      pipeline.resolve_track_facts(config)
    except config_lib.ConfigError as e:
      if "cannot open the data set" not in str(e):
        raise
      notes.append(f"data set {d.name!r} is not built here: every track's range is the pitch "
                   f"window (data.track_ranges)")
  return notes


def _critic_update_cost(engine, state, batch, chip: str) -> tuple[float, float | None]:
  """FLOPs and estimated seconds of one D update (the critic loop's body) on its own."""
  mesh = engine.mesh
  rows = shard_lib.batch(mesh)
  rep = shard_lib.replicated(mesh)
  real = jax.ShapeDtypeStruct(batch["pianoroll"].shape[1:], jnp.float32, sharding=rows)
  style = jax.ShapeDtypeStruct(batch["style"].shape[1:], jnp.int32, sharding=rows)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
  slope = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
  compiled = _compile(engine.jit(engine.critic_update),
                      (state["g"], state["g_stats"], state["d"], state["d_opt"], real, style,
                       key, slope), "critic update", chip)
  return _cost(compiled)


def compile_for_topology(config, topology: str, *, slices: int = 1, sampler: bool = True,
                         name: str = "") -> dict[str, Any]:
  """Compiles `config`'s train step (and its EMA sampler) for `slices` x `topology`.

  `name` labels the config in the report (e.g. its file).
  Returns the figures per device (see `format_report`). Raises ConfigError for a config that
  cannot run there (batch, mesh, topology), OutOfMemory when a compiled function needs more
  HBM than the chip has (its `report` holds what was measured), LibtpuMissing without libtpu.
  Compile-only devices never run anything: call this with the CPU as JAX's backend
  (JAX_PLATFORMS=cpu), as `jaxgan compile` does.
  """
  chip, _ = parse_topology(topology)
  devices = topology_devices(topology, slices)
  tc = config.train
  mesh = shard_lib.make_mesh(tc.mesh_data, tc.mesh_fsdp, devices=devices)
  hosts = len({d.process_index for d in devices})
  config_lib.check_batch(config, mesh, hosts)
  notes = _resolve_data_facts(config)
  engine = engines.make_engine(config, mesh)
  state = engine.abstract_with_shardings()
  batch = abstract_batch(config, mesh)

  hbm = CHIPS[chip]["hbm_gib"] * GIB
  report: dict[str, Any] = {
      "config": name or config.model.get("name", ""),
      "topology": topology, "slices": slices, "chip": chip,
      "device_kind": devices[0].device_kind, "devices": len(devices), "hosts": hosts,
      "mesh": dict(mesh.shape), "global_batch": tc.global_batch,
      "n_critic": config.loss.n_critic, "hbm_per_device": hbm, "jax": jax.__version__,
      "libtpu": _libtpu_version(), "notes": notes,
  }
  t = time.perf_counter()
  step = _compile(engine.step, (state, batch), "train step", chip)
  report["compile_s"] = time.perf_counter() - t
  flops, seconds = _cost(step)
  # XLA counts a loop body once: add (or take off) the D updates a steady step makes beyond
  # those it counted, as `jaxgan profile` does (see profiling.profile).
  accounting = "whole step"
  if isinstance(engine, gan.Engine):
    lc = config.loss
    counted = 2 if lc.reuse_fake and not engine.single_critic else 1
    extra = lc.n_critic - counted
    if extra:
      c_flops, c_seconds = _critic_update_cost(engine, state, batch, chip)
      flops += extra * c_flops
      seconds = seconds + extra * c_seconds if seconds and c_seconds else seconds
      accounting = f"step {extra:+d} x critic update"
    report["steady_from_step"] = profiling.steady_step(config)
  examples = tc.global_batch * config.loss.n_critic
  report["step"] = dict(
      _memory(step), flops_per_device=flops, flops=flops * len(devices),
      flop_accounting=accounting, est_step_s=seconds,
      est_examples_per_s=examples / seconds if seconds else None)
  if sampler:
    num = _sampler_batch(config, len(devices))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=shard_lib.replicated(mesh))
    fn = engine.jit(lambda s, k: engine.sample_ema(s, k, num))
    compiled = _compile(fn, (state, key), f"EMA sampler (batch {num})", chip)
    s_flops, s_seconds = _cost(compiled)
    report["sampler"] = dict(_memory(compiled), batch=num, flops_per_device=s_flops,
                             est_call_s=s_seconds)
  over = [name for name in ("step", "sampler") if name in report and report[name]["total"] > hbm]
  if over:
    parts = ", ".join(f"{name} {_gib(report[name]['total'])}" for name in over)
    raise OutOfMemory(
        f"needs more HBM per device than a {devices[0].device_kind} has "
        f"({_gib(hbm)}): {parts} (reduce train.global_batch or the model, or add chips / "
        f"train.mesh_fsdp)", report)
  return report


def _sampler_batch(config, devices: int) -> int:
  """The largest batch the training loop samples (train.eval_num), a multiple of the devices."""
  num = max(int(config.train.eval_num), 8)
  return -(-num // devices) * devices


def _gib(n: float) -> str:
  return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def _flop(n: float) -> str:
  for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if n >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.0f} FLOP"


def format_report(r: dict[str, Any]) -> str:
  """The dry run's figures as a Markdown table (per device unless said)."""
  s = r["step"]
  mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items())
  where = f"{r['slices']} x {r['topology']}" if r["slices"] > 1 else r["topology"]
  rows = [
      ("topology", f"{where}: {r['devices']} x {r['device_kind']} on {r['hosts']} host(s)"),
      ("mesh", mesh),
      ("global batch x n_critic", f"{r['global_batch']} x {r['n_critic']}"),
      ("compile time (train step)", f"{r['compile_s']:.1f} s"),
      ("HBM per device", _gib(r["hbm_per_device"])),
      ("step: arguments", _gib(s["arguments"])),
      ("step: temporaries", _gib(s["temporaries"])),
      ("step: outputs (not donated)", _gib(s["outputs"] - s["aliased"])),
      ("step: code", _gib(s["code"])),
      ("step: total", f"{_gib(s['total'])} ({100 * s['total'] / r['hbm_per_device']:.1f} % "
                      f"of HBM)"),
      ("FLOPs per step", f"{_flop(s['flops_per_device'])} per device, "
                         f"{_flop(s['flops'])} in all ({s['flop_accounting']})"),
      ("estimated step time", f"{1e3 * s['est_step_s']:.3f} ms (XLA's estimate)"
       if s["est_step_s"] else "not reported by XLA"),
      ("estimated examples/s", f"{s['est_examples_per_s']:,.0f}"
       if s["est_examples_per_s"] else "-"),
  ]
  if "sampler" in r:
    m = r["sampler"]
    rows.append((f"EMA sampler (batch {m['batch']}): total",
                 f"{_gib(m['total'])} ({100 * m['total'] / r['hbm_per_device']:.1f} % of HBM)"))
  rows.append(("jax / libtpu", f"{r['jax']} / {r['libtpu']}"))
  width = max(len(k) for k, _ in rows)
  lines = [f"| {'per device'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
  lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
  lines += [f"note: {n}" for n in r["notes"]]
  return "\n".join(lines)
