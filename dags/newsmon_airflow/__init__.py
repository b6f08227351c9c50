"""Helpers shared by the newsmon DAGs: settings, store, retries, notifications, mail.

Imported at DAG-parse time, so everything heavy (pipeline stages, SQLAlchemy engines,
the SMTP provider) is imported lazily inside functions.
"""
