"""Fault injection: a mixed workload against a local fabric whose processes are killed and whose chunks rot."""
