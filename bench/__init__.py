"""fastgw's benchmarks: ``python -m bench`` runs the whole comparison in one command.

The ``bench_*.py`` scripts beside it measure one thing each and run as
``python bench/NAME.py``; ``shared`` holds what they and the harness share.
"""
