"""Benchmarks, each run as a script (``.venv/bin/python scripts/bench/NAME.py``).

A package only so that the scripts share ``scripts.bench.stats`` by a plain absolute import.
"""
