#!/usr/bin/env python3
"""Regenerates the ClientHello fixtures in this directory (see README.md).

    python3 capture.py openssl    # the openssl-*.bin files, from Python's ssl module
    python3 capture.py chromium   # chromium-*.bin, from a headless Chromium on loopback
"""
import socket
import ssl
import subprocess
import sys
import warnings


def openssl_hello(path, server_name, version=None):
    """The first flight of an OpenSSL client, through memory BIOs (no socket)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    with open(path, "wb") as f:
        f.write(outgoing.read())


def chromium_hello(path):
    """What headless Chromium sends to https://www.example.test, mapped to a loopback port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--user-data-dir=/tmp/lb-fixture-chromium",
         "--host-resolver-rules=MAP www.example.test 127.0.0.1", "--dump-dom",
         f"https://www.example.test:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn, _ = listener.accept()
    conn.settimeout(2)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except socket.timeout:
        pass
    conn.close()
    browser.wait(timeout=30)
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0, on purpose
    if sys.argv[1:] == ["openssl"]:
        openssl_hello("openssl-3.0-tls13.bin", "Example.COM")
        openssl_hello("openssl-3.0-tls12.bin", "tls12.example.net", ssl.TLSVersion.TLSv1_2)
        openssl_hello("openssl-3.0-tls10.bin", "legacy.example.org", ssl.TLSVersion.TLSv1)
        openssl_hello("openssl-3.0-no-sni.bin", None)
    elif sys.argv[1:] == ["chromium"]:
        chromium_hello("chromium-156.bin")
    else:
        sys.exit(__doc__)
