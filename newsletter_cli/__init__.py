"""The ``newsletter`` console script: one entry point for every service and operator task."""
