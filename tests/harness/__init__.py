"""Test harnesses shared with the benches: a throwaway multi-replica
deployment (``cluster``) and its load generator (``loadgen``)."""
