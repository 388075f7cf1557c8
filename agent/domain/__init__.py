"""Pure data: no I/O, no frameworks."""
