"""Mutation testing of the core modules (a dev task, not CI): ``python -m tests.mutation --help``."""
