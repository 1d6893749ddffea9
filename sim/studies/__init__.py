"""Many runs of one scenario: variants side by side (compare, variants), the highest
rate that meets the SLOs (capacity, probes), grids and lists of variants into a
resumable table (sweep, store), and FlexGen's offload policy search (offload_search);
all on one process pool (pool)."""
