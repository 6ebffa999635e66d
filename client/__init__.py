"""Distill's Python client (``client.sdk.Client``) and the ``distill`` command line."""
