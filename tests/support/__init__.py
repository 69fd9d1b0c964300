"""Harnesses the tests and benchmarks share: real processes started on loopback, never imported by
a service."""
