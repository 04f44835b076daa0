"""A throwaway PostgreSQL cluster for tests: initdb and pg_ctl from the system's PostgreSQL.

:func:`start_postgres` makes a cluster in a temporary directory, configured for logical
decoding (``wal_level = logical``) and for speed rather than durability, listening on loopback
only (TCP on ``127.0.0.1`` and a Unix socket inside the directory) with ``trust``
authentication for the superuser ``postgres``. Leaving the ``with`` block stops the server
(``pg_ctl stop -m immediate``) and deletes the directory.

initdb refuses to run as root. Run as root, the helper runs every PostgreSQL binary as the
system's ``postgres`` user (``runuser -u postgres --``; another user with ``run_as=``) and gives
that user the temporary directory.

Why not pytest-postgresql: it starts clusters as the current user (so not as root, which is
how CI runs), only inside pytest, and its clusters are not set up for logical decoding; this
helper is small, works in and out of pytest, and knows about wal2json.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from ._supabase_sql import AUTH_SQL, GRANTS_SQL, PUBLICATION_SQL, REALTIME_SQL, ROLES_SQL

DEFAULT_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "10",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
}
"""Settings written to ``postgresql.conf``: logical decoding on, durability off.

``synchronous_commit`` stays on: logical decoding reads only WAL that is flushed, so with it off a
change would wait for the WAL writer (up to ``wal_writer_delay``) before it could be streamed.
"""


class PostgresNotFound(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) were not found."""


def find_postgres_bin(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``.

    Looks at ``bin_dir``, then ``$TRIO_REALTIME_PG_BIN``, then ``pg_config --bindir``, then the
    newest ``/usr/lib/postgresql/<version>/bin`` (Debian, Ubuntu), then ``$PATH``.

    Raises:
        PostgresNotFound: when none of them has both binaries.
    """
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    if env := os.environ.get("TRIO_REALTIME_PG_BIN"):
        candidates.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))

    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidates.append(Path(path))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL or set "
        "TRIO_REALTIME_PG_BIN to their directory"
    )


def wal2json_available(bin_dir: str | os.PathLike[str] | None = None) -> bool:
    """Return whether the PostgreSQL at ``bin_dir`` has the wal2json output plugin."""
    directory = find_postgres_bin(bin_dir)
    pg_config = directory / "pg_config"
    libdirs: list[Path] = []
    if pg_config.is_file():
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            libdirs.append(Path(out))
    libdirs.append(directory.parent / "lib")
    return any((libdir / "wal2json.so").is_file() for libdir in libdirs)


def plugin_settings(bin_dir: Path) -> dict[str, str]:
    """The settings that let replication users name wal2json as an output plugin.

    Newer PostgreSQL releases (15.20 among them) accept only the output plugins listed in
    ``output_plugin_libraries`` (by default ``pgoutput, test_decoding``); older ones have no
    such parameter, and would refuse to start with it in ``postgresql.conf``. This asks the
    server binary which parameters it knows (``postgres --describe-config``) and returns the
    setting with wal2json added to the server's default list when the parameter exists.
    """
    try:
        described = subprocess.run(
            [str(bin_dir / "postgres"), "--describe-config"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    for line in described.splitlines():
        fields = line.split("\t")
        if fields[0] == "output_plugin_libraries":
            default = fields[4] if len(fields) > 4 else ""
            plugins = [name.strip() for name in default.split(",") if name.strip()]
            if "wal2json" not in plugins:
                plugins.append("wal2json")
            return {"output_plugin_libraries": ", ".join(plugins)}
    return {}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """A running throwaway cluster; create it with :func:`start_postgres`.

    Attributes:
        host: ``127.0.0.1``.
        port: The TCP port it listens on.
        user: The superuser, ``postgres``.
        data_dir: The cluster's data directory (inside a temporary directory).
        bin_dir: Where its binaries come from.
    """

    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None, host: str) -> None:
        self.bin_dir = bin_dir
        self.host = host
        self.port = port
        self.user = "postgres"
        self.data_dir = root / "data"
        self._root = root
        self._run_as = run_as
        self._log = root / "postgres.log"

    def __repr__(self) -> str:
        return f"<PostgresCluster {self.host}:{self.port} {self.data_dir}>"

    def url(self, database: str = "postgres", *, user: str | None = None) -> str:
        """Return a ``postgresql://`` URL for ``database`` on this cluster."""
        name = quote(user or self.user, safe="")
        return f"postgresql://{name}@{self.host}:{self.port}/{quote(database, safe='')}"

    def _command(self, args: Sequence[str]) -> list[str]:
        if self._run_as is None:
            return list(args)
        return ["runuser", "-u", self._run_as, "--", *args]

    def run(self, binary: str, *args: str) -> str:
        """Run one of the cluster's binaries (``psql``, ``createdb``, ...) and return stdout.

        Raises:
            subprocess.CalledProcessError: when it fails (stderr is in the exception).
        """
        command = self._command([str(self.bin_dir / binary), *args])
        result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=self._root)
        return result.stdout

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql (stop at the first error) and return its output."""
        return self.run(
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(database), "-c", sql
        )

    def create_database(self, name: str, *, supabase: bool = True) -> str:
        """Create database ``name`` and return its URL.

        Args:
            name: The database name.
            supabase: Make it look like a Supabase project's database where RLS policies are
                concerned: the ``anon``, ``authenticated`` and ``service_role`` roles, the
                ``auth.uid()``, ``auth.role()`` and ``auth.jwt()`` functions, the default
                grants on ``public``, an empty ``supabase_realtime`` publication, and the
                ``realtime`` schema (``realtime.messages`` for private channel policies,
                ``realtime.topic()``, ``realtime.send()``, ``realtime.broadcast_changes()``).
        """
        self.run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)
        if supabase:
            self.psql(ROLES_SQL + AUTH_SQL + GRANTS_SQL + PUBLICATION_SQL + REALTIME_SQL, name)
        return self.url(name)

    def log(self) -> str:
        """Return the server log so far."""
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def _start(self, settings: Mapping[str, str]) -> None:
        self.run("initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8")
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        lines += [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self._root}'",
        ]
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# trio_realtime.testing\n" + "\n".join(lines) + "\n")
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self._log), "-w", "start")

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``); idempotent."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def start_postgres(
    *,
    bin_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
    run_as: str | None = None,
) -> Iterator[PostgresCluster]:
    """Run a throwaway PostgreSQL cluster for the duration of the ``with`` block.

    This blocks while the cluster starts (about a second); from trio, enter it in a worker
    thread or before ``trio.run``.

    Args:
        bin_dir: The directory of ``initdb``/``pg_ctl``; found with ``find_postgres_bin``
            when omitted.
        port: The TCP port; a free one by default.
        settings: Extra ``postgresql.conf`` settings, over ``DEFAULT_SETTINGS`` and, where the
            server has that parameter, an ``output_plugin_libraries`` that admits wal2json.
        run_as: The user to run PostgreSQL as; when running as root it defaults to
            ``postgres`` (initdb refuses root). Needs ``runuser`` (util-linux).

    Raises:
        PostgresNotFound: when the binaries are missing.
        RuntimeError: when the cluster cannot be created or started (with the server log), or
            when running as root and the ``run_as`` user does not exist.
    """
    directory = find_postgres_bin(bin_dir)
    host = "127.0.0.1"
    if run_as is None and os.geteuid() == 0:
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="trio-realtime-pg-"))
    try:
        if run_as is not None:
            try:
                entry = pwd.getpwnam(run_as)
            except KeyError:
                raise RuntimeError(
                    f"cannot run PostgreSQL as {run_as!r}: no such user (initdb refuses to run "
                    "as root; create the user or pass run_as=)"
                ) from None
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = PostgresCluster(directory, root, port or _free_port(host), run_as, host)
        try:
            cluster._start({**DEFAULT_SETTINGS, **plugin_settings(directory), **(settings or {})})
        except subprocess.CalledProcessError as exc:
            cluster.stop()
            raise RuntimeError(
                f"cannot start PostgreSQL: {exc.stderr.strip()}\n{cluster.log()}"
            ) from None
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
