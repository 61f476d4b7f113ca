"""Route flags: per-route state (live / canary / shadow / rollback target) and its stores."""
