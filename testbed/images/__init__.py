"""The machine (engine, binfmt) and the host images, per architecture."""
