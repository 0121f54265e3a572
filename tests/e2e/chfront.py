"""Start and query chfront (tests/clickhouse/chfront.py): ClickHouse's HTTP interface over the real
ClickHouse engine (chDB), for the ClickHouse exporter's end-to-end tests."""

import json
import pathlib
import select
import subprocess
import sys
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHFRONT = ROOT / "tests" / "clickhouse" / "chfront.py"


class ClickHouse:
    def __init__(self, data_dir: pathlib.Path, port: int = 0, user: str | None = None, password: str | None = None):
        """`user`/`password`: the only credentials the server accepts (default: `default`, no password)."""
        self.data_dir = data_dir
        self.auth = {"X-ClickHouse-User": user, "X-ClickHouse-Key": password or ""} if user else {}
        creds = ["--user", user, "--password", password or ""] if user else []
        self.log = data_dir.parent / (data_dir.name + ".log")
        self.proc = subprocess.Popen([sys.executable, str(CHFRONT), "--port", str(port), "--data-dir", str(data_dir), *creds],
                                     stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("chfront listening on "):
            self.stop()
            raise RuntimeError(f"chfront did not start: {line!r}\n{self.log.read_text()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def execute(self, sql: str) -> str:
        req = urllib.request.Request(self.url + "/", data=sql.encode(), method="POST", headers=self.auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"ClickHouse error for {sql!r}: {e.read().decode()}") from None

    def rows(self, sql: str) -> list:
        out = self.execute(sql + " FORMAT JSONEachRow")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def value(self, sql: str):
        rows = self.rows(sql)
        return next(iter(rows[0].values())) if rows else None

    def count(self, table: str, where: str = "1") -> int:
        try:
            return int(self.value(f"SELECT count() FROM {table} WHERE {where}"))
        except AssertionError as e:
            if "UNKNOWN_TABLE" in str(e) or "UNKNOWN_DATABASE" in str(e):
                return 0
            raise
