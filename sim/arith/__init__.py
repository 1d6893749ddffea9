"""The seeds' closed forms: a model as layers of ops with FLOPs and bytes (ops), its
parameter and FLOP counts (params), what a device holds of it (memory), and the dtypes
it runs in (precision). Pure functions of the specs; no hardware timing here."""
