"""Digests of the train state after a few steps, to pin the step's results bitwise.

tests/fixtures/golden_steps.json holds, per host and scenario (config, mesh), a SHA-256 of every
leaf of the state and the exact last metrics, written by an earlier version of the code. A change
that is meant to move code without changing the maths must reproduce them to the bit. XLA's CPU
kernels depend on the jax version and the host's instruction set, so each scenario is compared
only on a host the fixture has it for (the test skips otherwise). Steps compile at the package's
own CPU options (`package_compiler_options`), not the suite's.

    python -m tests.golden [NAME ...]   # writes this host's results of the scenarios (default:
                                        # all), only after a deliberate change or for a new host
"""

import contextlib
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np

from jaxgan import config as config_lib
from jaxgan import runtime, sharding
from jaxgan.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "golden_steps.json")
STEPS = 3

# name -> (config file, overrides, mesh (data, fsdp) or None for one device)
SCENARIOS = {
    "tiny/1": ("tiny.py", {}, None),
    "tiny/8": ("tiny.py", {}, (8, 1)),
    "tiny/fsdp": ("tiny.py", {"train.fsdp_min_size": 1}, (2, 4)),
    "tiny_critic3_reuse/1": ("tiny.py", {"loss.n_critic": 3, "loss.reuse_fake": True,
                                         "loss.critic_warmup_steps": 2,
                                         "loss.critic_warmup_n": 4,
                                         "conditioning.infill": 0.5}, None),
    # The voices architecture as the fixture's code had it (before model.rotary/local_conv).
    "tiny_voices/1": ("tiny_voices.py", {"loss.adv_weight": 0.1, "model.rotary": False,
                                         "model.local_conv": False}, None),
    "tutorial/1": ("musegan_tutorial.py", {}, None),
}


def host() -> dict[str, str]:
  """What XLA's CPU code generation depends on, beyond the program itself."""
  flags = ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = " ".join(sorted(w for w in line.split(":", 1)[1].split()
                                  if w.startswith(("avx", "fma", "sse", "amx"))))
          break
  except OSError:
    pass
  return {"jax": jax.__version__, "machine": platform.machine(), "isa": flags}


@contextlib.contextmanager
def package_compiler_options() -> Iterator[None]:
  """Engines built inside compile at the package's CPU options (LLVM -O1), as the fixture was
  written, whatever XLA_FLAGS says (the suite's -O0, conftest.py, rounds differently)."""
  real = runtime.compiler_options
  runtime.compiler_options = lambda platform, xla_flags=None: real(platform, "")
  try:
    yield
  finally:
    runtime.compiler_options = real


def load() -> dict:
  with open(FIXTURE) as f:
    return json.load(f)


def saved(fixture: dict, name: str, on_host: dict[str, str]) -> dict | None:
  """The saved results of scenario `name` on host `on_host`, None when the fixture has none."""
  for entry in fixture["hosts"]:
    if entry["host"] == on_host and name in entry["scenarios"]:
      return entry["scenarios"][name]
  return None


def _digest(x) -> str:
  a = np.ascontiguousarray(np.asarray(x))
  return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def run(name: str, make_engine) -> dict:
  """Digests of scenario `name` after STEPS steps; `make_engine(config, mesh)` builds the
  engine (init and step jitted with the state's shardings)."""
  file, overrides, mesh_shape = SCENARIOS[name]
  config = config_lib.load_config(os.path.join(ROOT, "configs", file),
                                  [(k, str(v)) for k, v in overrides.items()])
  mesh = (sharding.make_mesh(devices=jax.devices()[:1]) if mesh_shape is None
          else sharding.make_mesh(*mesh_shape))
  engine = make_engine(config, mesh)
  ds = pipeline.make_dataset(config, start_step=0, process_index=0, process_count=1)
  batches = [b for _, b in zip(range(STEPS), ds.as_numpy_iterator())]
  state = engine.init(jax.random.PRNGKey(0))
  place = sharding.batch(mesh, leading=1)
  for b in batches:
    state, metrics = engine.step(state, {k: jax.device_put(v, place) for k, v in b.items()})
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return {"state": combine({jax.tree_util.keystr(p): _digest(x) for p, x in leaves}),
          "metrics": {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}}


def combine(digests: dict[str, str]) -> dict[str, str]:
  """One digest per top-level entry of the state ("['g']", ...) from those of its leaves."""
  parts: dict[str, list[str]] = {}
  for path in sorted(digests):
    top = path[:path.index("]") + 1]
    parts.setdefault(top, []).append(f"{path}={digests[path]}")
  return {top: hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
          for top, lines in parts.items()}


def write(names: Iterable[str], make_engine: Callable) -> None:
  """Runs scenarios `names` and saves their results for this host in the fixture, beside
  those of other hosts. The caller compiles as the package does (`package_compiler_options`)."""
  fixture = load() if os.path.exists(FIXTURE) else {"steps": STEPS, "hosts": []}
  assert fixture["steps"] == STEPS, "the fixture's other scenarios ran another number of steps"
  here = host()
  entry = next((e for e in fixture["hosts"] if e["host"] == here), None)
  if entry is None:
    entry = {"host": here, "scenarios": {}}
    fixture["hosts"].append(entry)
  for name in names:
    entry["scenarios"][name] = run(name, make_engine)
    print(f"{name}: done", flush=True)
  os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
  with open(FIXTURE, "w") as f:
    json.dump(fixture, f, indent=1, sort_keys=True)
  print(f"wrote {FIXTURE}")


def main(argv: list[str]) -> None:
  from jaxgan import engines  # pylint: disable=import-outside-toplevel  (after the test set-up)
  with package_compiler_options():
    write(argv or list(SCENARIOS), engines.make_engine)


if __name__ == "__main__":
  import tests.conftest  # noqa: F401  (8 simulated devices, as in the tests)
  main(sys.argv[1:])
