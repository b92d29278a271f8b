"""jaxgan: a JAX training engine for GANs that compose symbolic music."""

import os as _os

# TensorFlow (the data pipeline and TensorBoard) prints start-up banners (oneDNN, CPU
# features) when first imported; these must be set before it is. A value set by the user wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's notice says results may differ in rounding: TensorFlow here only reads records and
# writes summaries, so its oneDNN kernels are not needed.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
