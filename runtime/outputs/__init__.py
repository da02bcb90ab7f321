"""Streaming writers: results JSON (via a per-track spool), overlay video, mask PNGs, timing."""
