"""Drift per adapter version and protected slice, and the guard that contains it.

Modules (nothing is imported here: ``router.flags.state`` imports :mod:`.policy`):

- :mod:`.stats`, :mod:`.sequential`: the statistics (PSI, Jensen-Shannon, KS, Wasserstein,
  Wilson, two-proportion z) and the calibrated Bernoulli CUSUM;
- :mod:`.baseline_model`, :mod:`.baselines`, :mod:`.baseline_source`: what drift is
  measured against (from lineage, or the model card's gate bars);
- :mod:`.quality`, :mod:`.inputs`, :mod:`.monitor`: the per-stream tests and the monitor
  reading the inference log incrementally;
- :mod:`.schema`, :mod:`.store`, :mod:`.sqlite_store`, :mod:`.pg_store`, :mod:`.events`:
  the monitor's tables (alerts, incidents, outbox, checkpoint) and how to query them;
- :mod:`.alerts`: Prometheus series and the signed webhook; :mod:`.guard`: the automatic
  containment; :mod:`.policy`: the route's guard policy; :mod:`.lease`: one monitor among
  replicas; :mod:`.runtime`: the gateway's background tasks.
"""
