"""The owner's tools on the counts: read, change and query them; never uploaded, never over HTTP."""
