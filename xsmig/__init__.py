"""xsmig: save and restore a simulated Xen-style PV domain across toolstack widths."""

__version__ = "0.1.0"
