"""Demo data: a live simulated cluster for `aidd --demo`, and a fixed state for snapshots and screenshots."""
