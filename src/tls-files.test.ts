import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { experimental } from "@grpc/grpc-js";
import { pino } from "pino";
import { makeTestPki, type TestPki } from "../test/support/certificates.js";
import { Status } from "./errors.js";
import { TlsFileProvider, readTlsFiles } from "./tls-files.js";

const quiet = pino({ level: "silent" });

describe("TLS files of a listener", () => {
  let first: TestPki;
  let second: TestPki;
  let dir: string;
  const paths = () => ({
    cert: join(dir, "server.pem"),
    key: join(dir, "server.key"),
    clientCa: join(dir, "ca.pem"),
  });
  const install = async (pki: TestPki, which: ("serverCert" | "serverKey" | "ca")[]) => {
    const names = { serverCert: "server.pem", serverKey: "server.key", ca: "ca.pem" };
    for (const key of which) await copyFile(pki[key], join(dir, names[key]));
  };

  before(async () => {
    first = makeTestPki();
    second = makeTestPki();
    dir = await mkdtemp(join(tmpdir(), "berth-tls-files-"));
  });
  after(async () => {
    for (const path of [first.dir, second.dir, dir]) await rm(path, { recursive: true, force: true });
  });

  test("a new listener gets the certificate on the next tick, before any file is read again", async () => {
    await install(first, ["serverCert", "serverKey", "ca"]);
    const provider = new TlsFileProvider(paths(), 60_000, quiet);
    const identities: (experimental.IdentityCertificateUpdate | null)[] = [];
    const cas: (experimental.CaCertificateUpdate | null)[] = [];
    const onIdentity = (update: experimental.IdentityCertificateUpdate | null) => identities.push(update);
    const onCa = (update: experimental.CaCertificateUpdate | null) => cas.push(update);
    provider.addCaCertificateListener(onCa);
    provider.addIdentityCertificateListener(onIdentity);
    assert.equal(identities.length, 0, "not during the add: grpc-js registers its watcher after it");
    await new Promise((resolve) => process.nextTick(resolve));
    assert.equal(identities.length, 1);
    assert.ok(identities[0]?.certificate.toString().includes("BEGIN CERTIFICATE"));
    assert.ok(cas[0]?.caCertificate.toString().includes("BEGIN CERTIFICATE"));
    provider.removeCaCertificateListener(onCa);
    provider.removeIdentityCertificateListener(onIdentity);
  });

  test("a reload that finds a certificate without its key keeps the set in use; the full set replaces it", async () => {
    await install(first, ["serverCert", "serverKey", "ca"]);
    const provider = new TlsFileProvider(paths(), 60_000, quiet);
    const certificates: string[] = [];
    const onIdentity = (update: experimental.IdentityCertificateUpdate | null) =>
      certificates.push(update?.certificate.toString() ?? "none");
    provider.addIdentityCertificateListener(onIdentity);
    await new Promise((resolve) => process.nextTick(resolve));
    await install(second, ["serverCert"]);
    provider.reload();
    assert.equal(certificates.length, 1, "a mismatched certificate and key are not published");
    provider.reload();
    assert.equal(certificates.length, 1, "unchanged files are not published again");
    await install(second, ["serverKey"]);
    provider.reload();
    assert.equal(certificates.length, 2);
    assert.notEqual(certificates[1], certificates[0]);
    assert.notEqual(certificates[1], "none");
    provider.removeIdentityCertificateListener(onIdentity);
  });

  test("unusable files are refused at startup with the file named", async () => {
    await install(first, ["serverCert", "serverKey", "ca"]);
    assert.throws(
      () => readTlsFiles({ ...paths(), key: join(dir, "missing.key") }),
      (err: { code?: Status; message: string }) =>
        err.code === Status.FAILED_PRECONDITION && /cannot read TLS key .*missing\.key/.test(err.message),
    );
    await writeFile(join(dir, "garbage.pem"), "not a certificate\n");
    assert.throws(
      () => readTlsFiles({ ...paths(), cert: join(dir, "garbage.pem") }),
      (err: { code?: Status; message: string }) =>
        err.code === Status.FAILED_PRECONDITION && /do not make a working set/.test(err.message),
    );
  });
});
