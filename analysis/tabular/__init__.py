"""Tabular data for GNSM: the schema a study writes for a table (each column categorical with its levels, or
continuous; which rows are inliers), reading and encoding tables against it, and the benchmark's data sets,
splits and baselines. Numpy and pandas only: the score network lives in :mod:`models.gnsm`."""
