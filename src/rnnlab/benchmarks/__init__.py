"""Benchmarks that ship with the package (``rnnlab bench ...``); they measure and never assert."""
