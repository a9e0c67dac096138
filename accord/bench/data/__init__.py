"""Evaluation data: the RouteLLM rows (as outcome records and as replay logs), generated logs, workloads."""
