"""Shared by the API and the worker: settings, tables, the job spec, storage, file formats."""
