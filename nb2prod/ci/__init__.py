"""``nb2prod ci``: CI workflows that close the retraining loop (build, compare, canary, gate)."""
