"""Test set-up: 8 simulated CPU devices in every test process, TensorFlow kept quiet."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Must happen before JAX initialises its backend; every test sees 8 devices.
jax.config.update("jax_num_cpu_devices", 8)

# Tests build many engines of the same tiny shapes: a persistent compilation cache shared by
# the test processes turns every compilation after the first into a cache hit.
_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".pytest_cache", "xla")
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
