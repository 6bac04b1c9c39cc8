"""A throw-away certificate authority for the TLS tests, made with the
`openssl` command line in a temporary directory:

    ca = tlsca.CA(directory, "Kefu Test CA")
    cert, key = ca.server_cert("imap")      # for 127.0.0.1 and localhost
    ca.pem                                  # the CA certificate (a tls_ca_bundle)

Keys are P-256 (fast to make); certificates are valid for two days.  A
failing openssl command raises AssertionError with its output.
"""

import os
import shutil
import subprocess

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _run(args, cwd):
    if not os.path.exists(OPENSSL):
        raise AssertionError("openssl missing: apt-get install openssl")
    cp = subprocess.run([OPENSSL] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        raise AssertionError("openssl %s failed (%d)\n%s%s"
                             % (" ".join(args), cp.returncode, cp.stdout, cp.stderr))
    return cp.stdout


class CA:
    def __init__(self, directory, name="Kefu Test CA"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.slug = "".join(c if c.isalnum() else "-" for c in name.lower())
        self.key = os.path.join(directory, self.slug + ".key")
        self.pem = os.path.join(directory, self.slug + ".pem")
        _run(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", self.key, "-out", self.pem, "-days", "2", "-subj", "/CN=" + name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)

    def server_cert(self, label, dns=("localhost",), ips=("127.0.0.1",)):
        """(cert path, key path) of a server certificate signed by this CA, for
        the given DNS names and IP addresses (subjectAltName)."""
        base = os.path.join(self.dir, "%s-%s" % (self.slug, label))
        key, csr, cert, ext = base + ".key", base + ".csr", base + ".pem", base + ".ext"
        san = ",".join(["DNS:" + d for d in dns] + ["IP:" + i for i in ips])
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % san)
        cn = dns[0] if dns else ips[0]
        _run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=" + cn], self.dir)
        _run(["x509", "-req", "-in", csr, "-CA", self.pem, "-CAkey", self.key, "-CAcreateserial",
              "-out", cert, "-days", "2", "-extfile", ext], self.dir)
        return cert, key
