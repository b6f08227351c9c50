"""News monitoring for US–Pakistan–India relations.

Stages, one module each: ``feeds`` (feed list, fetch, parse), ``extract`` (article
pages → clean text), ``dedupe`` (same URL / same text / same story), ``classify``
(relevance, dyads, topics, evidence), ``digest`` (the morning email) and ``store``
(the database). ``ingest`` composes the first four. Nothing here imports Airflow.
"""

__version__ = "0.1.0"
