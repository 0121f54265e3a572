"""A real Kafka-protocol broker for the tests and benchmarks: tansu (tests/kafka/setup.sh installs it)
with in-memory storage on a free port, plus an independent consumer (confluent-kafka, librdkafka)."""

import os
import pathlib
import socket
import subprocess
import time

from conftest import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tansu_binary() -> str:
    return subprocess.run(["bash", str(ROOT / "tests" / "kafka" / "setup.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


class Kafka:
    """One tansu broker; `topic()` creates topics, `consume()` reads a topic from its start."""

    def __init__(self, workdir: pathlib.Path, port: int | None = None, advertised_port: int | None = None):
        """`advertised_port`: the port clients are told to use (a TLS terminator in front)."""
        self.bin = tansu_binary()
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "tansu.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, RUST_LOG=os.environ.get("TANSU_LOG", "warn"))
        self.proc = subprocess.Popen([self.bin, "broker", "--storage-engine", "memory://tansu/",
                                      "--listener-url", url, "--advertised-listener-url", advertised],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("tansu did not start listening within 30 s")

    def topic(self, name: str, partitions: int = 1):
        subprocess.run([self.bin, "topic", "create", name, "--broker", f"tcp://{self.bootstrap}",
                        "--partitions", str(partitions)], check=True, capture_output=True, timeout=30)

    def consume(self, topic: str, want_items, timeout: float = 30.0, **extra) -> list:
        """Messages of `topic` from the beginning until `want_items(messages)` is true; `extra`:
        more consumer properties (`bootstrap.servers`, `security.protocol`, …)."""
        from confluent_kafka import Consumer, KafkaError
        conf = {"bootstrap.servers": self.bootstrap, "group.id": f"t-{time.time_ns()}",
                "auto.offset.reset": "earliest", "enable.auto.commit": False}
        conf.update({k.replace("_", "."): v for k, v in extra.items()})
        c = Consumer(conf)
        c.subscribe([topic])
        got = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline and not want_items(got):
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consumer error: {m.error()}")
                got.append(m)
        finally:
            c.close()
        return got

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
