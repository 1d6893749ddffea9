"""Drawing a workload's requests from its spec: arrival times (arrivals), prompt and
output lengths (lengths), and trace and length files read row by row (traces)."""
