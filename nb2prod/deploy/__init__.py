"""Deploying a built directory: Cloud Run, Kubernetes, and reading a running service's drift."""
