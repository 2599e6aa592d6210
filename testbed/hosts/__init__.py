"""The hosts a run starts and reaches (containers, SSH, the reaper, xsmig's sources)."""
