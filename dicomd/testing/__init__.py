"""Test data for the test suite and the benchmark. Nothing under dicomd/ outside this package
imports it (tests/test_architecture.py checks): the daemon never runs this code."""
