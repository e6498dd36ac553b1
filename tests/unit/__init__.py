"""Unit tests: one module of fastgw at a time, no processes or sockets."""
