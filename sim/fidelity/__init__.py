"""The fidelity suite: the simulator against published measurements (validate), with
one module per published source family and the records they share (rows)."""
