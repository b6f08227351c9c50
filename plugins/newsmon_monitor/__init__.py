"""The News Monitor view served by the Airflow API server (see ``newsmon_plugin.py``)."""
