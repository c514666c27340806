"""Issue 6's benchmark: counting strategies driven over HTTP against Google's emulator."""
