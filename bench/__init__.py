"""Benchmark of the service against the seed's serving design and bare onnxruntime (issue 4).

Run ``python -m bench`` (about 6-7 minutes) or ``python -m bench --quick`` (under 2 minutes, noisy).
"""
