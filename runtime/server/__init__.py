"""Serving processes: uvicorn, its protocol and signal tweaks (every uvicorn-internal dependency lives here)."""
