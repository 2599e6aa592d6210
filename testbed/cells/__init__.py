"""One cell on its hosts: create, migrate, inject faults, judge, keep artifacts."""
