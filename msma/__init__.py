"""The ``msma`` command line: the composition root that wires analysis, models and app together."""
