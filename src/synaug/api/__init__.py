"""The objects of synaug's public Python API (re-exported at the top of the package)."""
