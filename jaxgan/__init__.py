"""jaxgan: a JAX training engine for GANs that compose symbolic music."""
