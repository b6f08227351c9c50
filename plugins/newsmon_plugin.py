"""Airflow plugin: the News Monitor view (stories, feed health, digests, trend).

The FastAPI app is mounted by the API server at ``/newsmon``; the external view adds
a "News Monitor" entry to the UI's navigation that shows it inside the Airflow UI.
The app checks the Airflow login itself (see ``newsmon_monitor.app.require_user``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from newsmon_monitor.app import app as monitor_app

URL_PREFIX = "/newsmon"


class NewsMonitorPlugin(AirflowPlugin):
    name = "newsmon"
    fastapi_apps = [{"app": monitor_app, "url_prefix": URL_PREFIX, "name": "News Monitor"}]
    external_views = [
        {
            "name": "News Monitor",
            "href": URL_PREFIX + "/",
            "url_route": "news-monitor",
            "destination": "nav",
            # Its own entry in the UI's side bar: the page analysts open first.
            "nav_top_level": True,
            "icon": URL_PREFIX + "/icon.svg",
        }
    ]
