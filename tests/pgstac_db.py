"""Throw-away pgstac databases on the machine's PostgreSQL, for the tests of the pgstac store.

Each user (a test module, through a module-scoped fixture) gets a database of its own,
``thisme_test_<random>``, migrated by pypgstac and dropped afterwards. A PostgreSQL that cannot be
reached FAILS the tests that need it, loudly: it never skips them.

The server is ``THISME_TEST_POSTGRES`` (a URL to a database the tests may connect to in order to
create and drop others), by default ``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

ADMIN_URL_ENV = "THISME_TEST_POSTGRES"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "thisme_test_"
#: pgstac's migration creates cluster-wide roles: one migration at a time on this machine.
LOCK_PATH = Path(tempfile.gettempdir()) / "thisme-stac-pgstac-migrate.lock"


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def database_url(name: str, base: str | None = None) -> str:
    """``base`` (the admin URL by default) pointed at database ``name``."""
    parts = urlsplit(base or admin_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the admin database, or a failed test saying why."""
    url = admin_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as err:
        parts = urlsplit(url)
        reason = " ".join(str(err).split())
        pytest.fail(
            f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432} "
            f"(set {ADMIN_URL_ENV} or start the server, as .ci/run does): {reason}",
            pytrace=False,
        )


@contextmanager
def migration_lock() -> Iterator[None]:
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(url: str, version: str | None = None) -> str:
    """Install (or upgrade) pgstac in the database at ``url`` with pypgstac; its version."""
    from pypgstac.db import PgstacDB
    from pypgstac.migrate import Migrate

    with migration_lock():
        db = PgstacDB(dsn=url)
        try:
            return str(Migrate(db).run_migration(version))
        finally:
            db.disconnect()  # gives its connection back: close() ends only the idle ones
            db.close()


@contextmanager
def temporary_database(*, migrated: bool = True) -> Iterator[str]:
    """Create ``thisme_test_<random>`` (C collation, like SQLite's byte order), migrate it
    unless told not to, yield its URL, drop it."""
    name = f"{PREFIX}{secrets.token_hex(6)}"
    with admin_connection() as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C'").format(
                sql.Identifier(name)
            )
        )
    url = database_url(name)
    try:
        if migrated:
            migrate(url)
        yield url
    finally:
        with admin_connection() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def template_database() -> Iterator[str]:
    """A database with pgstac and the store's schema installed, to be cloned by
    ``cloned_database`` (a copy costs a fraction of a migration); dropped afterwards."""
    from thisme_stac.store.pgstac import PgstacStore

    with temporary_database() as url:
        PgstacStore(url).close()
        yield url


@contextmanager
def cloned_database(template_url: str) -> Iterator[str]:
    """A fresh ``thisme_test_<random>`` copied from the database at ``template_url`` (which
    must have no open connection); yields its URL, drops it."""
    name = f"{PREFIX}{secrets.token_hex(6)}"
    template = urlsplit(template_url).path.lstrip("/")
    with admin_connection() as admin:
        for attempt in range(3):  # the server itself waits ~5 s for other sessions to end
            try:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                break
            except psycopg.errors.ObjectInUse:  # a closed session's backend is still exiting
                if attempt == 2:
                    raise
    try:
        yield database_url(name)
    finally:
        with admin_connection() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
