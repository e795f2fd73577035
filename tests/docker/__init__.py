"""Tests on a real, private Docker engine (tests/support/docker_engine.py)."""
