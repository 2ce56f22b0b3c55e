"""The embedded demo: the cohort generator from the real MNI152 template and AAL atlas, and a synthetic published run
for tests and benchmarks."""
