"""Benchmarks and fault drills: code that measures the suite, kept apart from production code.

Nothing under ``services/`` or ``shared/`` imports this package; the ``newsletter bench``
commands and the fault tests do.
"""
