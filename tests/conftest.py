"""Test set-up: 8 simulated CPU devices in every test process, TensorFlow kept quiet."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# LLVM at -O0: compiles of the tests' tiny models take ~40 % less CPU time than at the
# package's -O1, and their steps run as fast. Set here, so the `jaxgan` processes tests start
# inherit it; tests that set their own XLA_FLAGS add TEST_XLA_FLAGS to them.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402

# Must happen before JAX initialises its backend; every test sees 8 devices.
jax.config.update("jax_num_cpu_devices", 8)

# Tests build many engines of the same tiny shapes: a persistent compilation cache shared by
# the test processes turns every compilation after the first into a cache hit.
# The environment carries it to the `jaxgan` processes tests start (JAX reads these at import).
_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".pytest_cache", "xla")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
