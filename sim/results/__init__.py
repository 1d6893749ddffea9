"""What a run's records say: the typed Summary (summary), latencies and SLOs (slo), the
device and link frames (frames), files and terminal tables (report, table), the Chrome
trace (trace) and plots (plots). `sim.results.run.simulate` composes plan, engine and
summary into one call. Everything here is computed from records, never from live
engine objects."""
