"""The converge benchmark (not a test): `python -m bench`, see bench/README.md."""
