"""The pieces of tools/reproduce.py: plan (budgets, groups, runs), runs (subprocesses, resume), report (tables)."""
