"""The ``msma`` command line: the composition root that wires analysis, models and app together."""

__version__ = "0.1.0"
