"""The stream family: legacy native, escaped and extended-info encodings."""
