"""Load test: several vestige-mcp servers on one file, a ledger of acknowledged writes, faults.

Filled by the load-test issue; it drives Vestige only through its public faces.
"""
