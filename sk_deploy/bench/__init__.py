"""Benchmarks: latency and throughput of a bundle on every backend (latency.py), HTTP load on the service
(http_load.py), and the reports for machines and people (report.py, plots.py)."""
