"""Shared by the payment-sync benchmarks: a scratch database and the environment pointing at it."""
import os
import uuid
from contextlib import contextmanager

import psycopg

ADMIN_DSN = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def scratch_environment(tag, **extra):
    """A migrated scratch database and the env for the app, gunicorn and the worker; dropped afterwards."""
    name = f"closeout_bench_{tag}_{os.getpid()}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = {"CLOSEOUT_ENV": "test", "SECRET_KEY": "bench", "DATABASE_URL": ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}",
           "REDIS_URL": REDIS_URL, "RQ_QUEUE_PREFIX": f"closeout-bench-{uuid.uuid4().hex[:6]}", **extra}
    os.environ.update(env)
    from flask_migrate import upgrade

    from portal import create_app
    from portal.config import load_config

    app = create_app(load_config("test"))
    with app.app_context():
        upgrade()
    try:
        yield app, {**os.environ, **env}
    finally:
        from portal.extensions import db

        with app.app_context():
            db.engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
