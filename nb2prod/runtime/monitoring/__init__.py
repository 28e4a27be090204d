"""Monitoring inside the service: reference profile, drift, feedback, alerts, metrics, endpoints."""
