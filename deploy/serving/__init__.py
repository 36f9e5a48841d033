"""Capacity at a latency SLO: a dynamic batcher and concurrent executors per runtime, driven by MLPerf LoadGen, and the
search for the serving configuration with the most queries per second under the SLO."""
