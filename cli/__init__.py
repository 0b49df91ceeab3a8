"""The `deepcompression` command line: inspect and evaluate compressed-model files."""
