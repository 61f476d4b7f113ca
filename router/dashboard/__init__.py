"""The on-call dashboard: one page served by the gateway, over the admin API.

- :mod:`.api`: ``GET /dashboard`` (the page, its script and style; ``Host`` checked like the
  admin API) and ``GET /admin/dashboard/state`` (the JSON it polls; role ``oncall``).
- :mod:`.service`: what the state holds (routes and their audit, traffic per adapter and
  slice, open drift alerts and incidents), each part cached briefly so polling cannot load
  the gateway (:mod:`.cache`).
- :mod:`.reader`: read-only queries on the inference-log database (SQLite or PostgreSQL),
  off the event loop; :mod:`.traffic`: rows into rates, latency, accuracy and series.
- ``static/``: the page, plain HTML, CSS and JavaScript (no build step, nothing loaded from
  elsewhere). Changes go through the admin API with the person's key.
"""
