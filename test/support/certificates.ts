import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Another client certificate of the same CA, named other-client (DNS:other.test). */
  otherClient: { cert: string; key: string };
  /** A client certificate from another CA, which berth must refuse. */
  strangerCert: string;
  strangerKey: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeCa(dir: string, name: string): void {
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
}

function makeCert(dir: string, name: string, ca: string, extensions: string): void {
  openssl(
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
    ],
    dir,
  );
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
}

/** A throwaway PKI made with openssl: a CA with a server and a client certificate, and a stranger CA with a client. */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "berth-pki-"));
  makeCa(dir, "ca");
  makeCa(dir, "stranger-ca");
  makeCert(dir, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  makeCert(dir, "client", "ca", "subjectAltName=DNS:runner.test\nextendedKeyUsage=clientAuth\n");
  makeCert(dir, "other-client", "ca", "subjectAltName=DNS:other.test\nextendedKeyUsage=clientAuth\n");
  makeCert(dir, "stranger", "stranger-ca", "subjectAltName=DNS:stranger.test\nextendedKeyUsage=clientAuth\n");
  const file = (name: string) => join(dir, name);
  return {
    dir,
    ca: file("ca.pem"),
    serverCert: file("server.pem"),
    serverKey: file("server.key"),
    clientCert: file("client.pem"),
    clientKey: file("client.key"),
    otherClient: { cert: file("other-client.pem"), key: file("other-client.key") },
    strangerCert: file("stranger.pem"),
    strangerKey: file("stranger.key"),
  };
}
