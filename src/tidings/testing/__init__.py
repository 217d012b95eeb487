"""Test helpers for Tidings users and for the project's own suites."""
