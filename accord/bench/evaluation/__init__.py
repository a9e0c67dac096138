"""Evaluating routers as RouteLLM and RouterBench do: metrics (PGR, APGR, CPT, hull, AIQ), reports, baselines,
cross-fitting, suites and their tables and plots."""
