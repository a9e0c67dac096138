"""Evaluation data: the RouteLLM rows (one reader; per-query outcome records and per-turn replay logs), generated
logs, workloads."""
