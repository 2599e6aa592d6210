"""Runs of many cells: select, shard, schedule (matrix, repro, soak)."""
