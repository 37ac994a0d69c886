"""Benchmarks of surfmap's flat maps: speed and distortion side by side with other tools.

Run ``python -m benchmarks.run --help``; see ``benchmarks/README.md``.
"""
