"""xsmig: save and restore a simulated Xen-style PV domain across toolstack widths."""

__version__ = "0.3.0.dev0"
