"""Batch sweeps over configurations: spec (YAML) -> points -> runs (process pool or Dask) -> one
tidy table. `llmsim sweep run` / `llmsim sweep plot`; docs/sweeps.md."""
