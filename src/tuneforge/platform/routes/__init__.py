"""Routers of the control plane; the app factory includes ``ROUTERS`` (deployments/gateway add theirs)."""
