"""The train step and the checkpoints against results saved by an earlier version of the code.

A refactor must not move a bit: the step's state and metrics after a few steps (tests/golden.py)
and a checkpoint it wrote (tests/fixtures/tiny_run_v0) are compared exactly.
"""

import json
import os
import shutil

import jax
import pytest

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import engines, sample, sharding
from tests import golden

SAVED = golden.load()
OLD_RUN = os.path.join(golden.ROOT, "tests", "fixtures", "tiny_run_v0")
# One device, and the voices model, in `make test`; the other layouts in `make test-slow`.
FAST = ("tiny/1", "tiny_voices/1", "tutorial/1")


def _digests(state) -> dict[str, str]:
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return golden.combine({jax.tree_util.keystr(p): golden._digest(x)  # pylint: disable=protected-access
                         for p, x in leaves})


@pytest.fixture(autouse=True)
def _package_compiler_options():
  """The fixture holds what the package computes with its own CPU options (LLVM -O1)."""
  with golden.package_compiler_options():
    yield


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
    for n in sorted(golden.SCENARIOS)])
def test_step_reproduces_the_saved_results_bitwise(name):
  want = golden.saved(SAVED, name, golden.host())
  if want is None:
    hosts = [e["host"] for e in SAVED["hosts"] if name in e["scenarios"]]
    pytest.skip(f"the fixture has {name} for {hosts}, this is {golden.host()}: XLA's CPU "
                "kernels may round differently")
  got = golden.run(name, engines.make_engine)
  assert got["state"] == want["state"]
  assert {k: got["metrics"][k] for k in want["metrics"]} == want["metrics"]


def test_checkpoint_of_the_earlier_version_restores(tmp_path):
  workdir = shutil.copytree(OLD_RUN, tmp_path / "run")
  with open(os.path.join(OLD_RUN, "digests.json")) as f:
    want = json.load(f)
  # As the trainer resumes: into the abstract state of the model the run's config builds.
  config = config_lib.load_run_config(str(workdir))
  engine = engines.make_engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  ckpt = ckpt_lib.Checkpointer(str(workdir / "checkpoints"), every=1, keep=1)
  state, step = ckpt.restore_latest(engine.abstract_with_shardings())
  ckpt.close()
  assert step == want["step"]
  assert _digests(state) == want["state"]
  # As inference loads it: the generator's EMA weights, ready to sample.
  gen = sample.Generator.from_workdir(str(workdir))
  assert gen.step == want["step"]
  assert _digests({"g_ema": gen.variables["params"]})["['g_ema']"] == want["state"]["['g_ema']"]
  rolls = sample.sample(gen, jax.random.PRNGKey(0), 4)
  assert rolls.shape == (4,) + tuple(engine.data_shape)
