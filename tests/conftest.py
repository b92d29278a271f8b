"""Test set-up: 8 simulated CPU devices in every test process, TensorFlow kept quiet."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Must happen before JAX initialises its backend; every test sees 8 devices.
jax.config.update("jax_num_cpu_devices", 8)
