"""TLS for the exporter tests: certificates made on the spot (`cryptography`) and a small TLS
terminator (asyncio + ssl, ALPN h2 and http/1.1) that forwards the decrypted bytes to a plain TCP
port — in front of a gateway Sluice, chfront's ClickHouse or a Kafka broker."""

import asyncio
import datetime
import ipaddress
import pathlib
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: pathlib.Path, cert, key) -> tuple[pathlib.Path, pathlib.Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    crt = path.with_suffix(".pem")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k = path.with_name(path.name + "-key.pem")
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


class Pki:
    """A CA with a server certificate (localhost, 127.0.0.1) and a client certificate in `dir`."""

    def __init__(self, dir: pathlib.Path, name: str = "test-ca"):
        now = datetime.datetime.now(datetime.timezone.utc)
        self.dir = dir
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                    .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(hours=1))
                    .not_valid_after(now + datetime.timedelta(days=2))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                    .sign(self._ca_key, hashes.SHA256()))
        self.ca_file, _ = _write(dir / name, self._ca, self._ca_key)
        self.server_cert, self.server_key = self._leaf(f"{name}-server", server=True)
        self.client_cert, self.client_key = self._leaf(f"{name}-client", server=False)

    def _leaf(self, cn: str, server: bool):
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self._ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("gateway.test"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return _write(self.dir / cn, b.sign(self._ca_key, hashes.SHA256()), key)


class TlsProxy:
    """Terminates TLS on a free port and pipes each connection to 127.0.0.1:`target`.
    `client_ca`: require a client certificate signed by it (mTLS). `handshakes_failed` counts
    handshakes the proxy refused; `connections` counts those that made it through."""

    def __init__(self, pki: Pki, target: int, client_ca: pathlib.Path | None = None,
                 alpn=("h2", "http/1.1"), port: int = 0):
        self.target = target
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        if alpn:
            self.ctx.set_alpn_protocols(list(alpn))
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.handshakes_failed = 0
        self.connections = 0
        self.writers = set()
        self.loop = asyncio.new_event_loop()
        # Bound here (not in the loop) so the port is known and listening when __init__ returns.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        self.stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self.sock)
        async with server:
            await self.stopped.wait()
            # Cut every piped connection, so the peers on both sides see it close.
            for w in list(self.writers):
                w.transport.abort()
            await asyncio.sleep(0.05)

    async def _handle(self, reader, writer):
        self.writers.add(writer)
        try:
            await writer.start_tls(self.ctx)
        except (ssl.SSLError, OSError, ConnectionError):
            self.handshakes_failed += 1
            self.writers.discard(writer)
            if writer.transport is not None:
                writer.transport.abort()
            return
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers.add(up_w)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, ConnectionError, ssl.SSLError):
                pass
            finally:
                try:
                    w.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.writers.discard(writer)
        self.writers.discard(up_w)

    def stop(self):
        self.loop.call_soon_threadsafe(lambda: self.stopped.set())
        self.thread.join(5)
