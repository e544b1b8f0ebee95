"""The peers the comparison runs against (Celery, RQ, dramatiq): their task modules, imported by their workers."""
