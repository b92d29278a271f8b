"""Song data sets as TFDS builders, and the functions that build and read them.

Importing this package registers the builders jsb_chorales, jsb_chorales_standard,
music21_styles and midi_folder with TFDS, so `tfds.builder(name, data_dir=...)` and `tfds.load` find them. It does not start
TensorFlow: that happens only when a data set is built or read.

`jaxgan.data.prepare` is the module (prepare.prepare builds a data set); the package does not
rebind the name to the function, so `from jaxgan.data import prepare` gives the module.
"""

import os

# Before anything imports TensorFlow: its C++ start-up banner is noise for a data tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=wrong-import-position
from jaxgan.data import builders, prepare  # noqa: E402  builders registers with TFDS
from jaxgan.data.builders import (  # noqa: E402
    JsbChorales, JsbChoralesStandard, MidiFolder, Music21Styles, TrackFacts)
from jaxgan.data.prepare import (  # noqa: E402
    DataInfo, DataWriteError, dataset_info, default_data_dir, format_summary, read_split)

__all__ = [
    "DataInfo", "DataWriteError", "JsbChorales", "JsbChoralesStandard", "MidiFolder",
    "Music21Styles", "TrackFacts", "builders", "dataset_info", "default_data_dir",
    "format_summary", "prepare", "read_split",
]
