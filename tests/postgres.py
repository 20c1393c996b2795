"""A real PostgreSQL server for tests: Debian's packaged binaries, a throwaway cluster on 127.0.0.1."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

USER = "dagster"
PASSWORD = "dagster-test-password"
DB = "dagster"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }


def bin_dir() -> Path:
    """The newest installed server's binaries (Debian keeps them out of PATH, in /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise RuntimeError(
        "no PostgreSQL server installed: `apt-get install postgresql` (.ci/run does it; as root, the tests run the "
        "server as the package's `postgres` account)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Create, start and finally remove a cluster that listens on 127.0.0.1 only, with password auth."""
    binaries = bin_dir()
    # The server refuses to run as root; Debian's package creates the `postgres` account for it.
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="cx-pg-"))
    data, log, pwfile = root / "data", root / "server.log", root / "pw"

    def run(*args: str) -> None:
        done = subprocess.run([*as_server, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}{tail}")

    try:
        pwfile.write_text(PASSWORD)
        if as_server:
            shutil.chown(root, "postgres")
            shutil.chown(pwfile, "postgres")
        port = free_port()
        run(str(binaries / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        server = Postgres("127.0.0.1", port, USER, PASSWORD, DB)
        con = psycopg2.connect(host=server.host, port=port, user=USER, password=PASSWORD, dbname="postgres")
        con.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        con.cursor().execute(f"CREATE DATABASE {DB}")
        con.close()
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
