"""The inference log: every request recorded with the adapter that served it."""
