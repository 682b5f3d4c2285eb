"""Split names of a dataset folder (data/<name>/<split>.parquet): written by data_gen, read by training and evals."""

SPLITS = ("train", "dev", "test")
VALIDATION = "validation"  # a slice in wording of its own, written only when a build asks for one (validation_fraction)
