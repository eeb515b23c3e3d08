"""End-to-end jobs built from the library: the demo now, the pruning study later."""
