"""Reliability: retry policy, dead letters, inbox (dedupe) and the outbox relay."""
