/**
 * Who is calling, and whether they are on a listener's allow-list
 * (tls.allowedClients), in process: the interceptor that records the caller
 * from the connection (and drops what a client claims), and the matching of
 * a caller against the list by SAN, subject or common name.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Caller, callerAllowed, callerOf, describeCaller } from "../../src/caller.js";
import { interceptedMetadata, peerCertificate } from "./intercepted-caller.js";

const tcp = { kind: "tcp", address: "tcp://0.0.0.0:7443" } as const;
const unix = { kind: "unix", address: "unix:///run/berth/berth.sock" } as const;

describe("the caller of a call", () => {
  test("on a unix socket: the listener's socket, whatever the peer", () => {
    assert.deepEqual(callerOf(interceptedMetadata(unix, { peer: "unknown" })), {
      transport: "unix",
      address: "unix:///run/berth/berth.sock",
    });
  });

  test("on plain TCP: the peer address; on TLS without a client certificate: the same, as tls", () => {
    assert.deepEqual(callerOf(interceptedMetadata(tcp, { peer: "127.0.0.1:50412" })), {
      transport: "tcp",
      address: "127.0.0.1:50412",
    });
    assert.deepEqual(callerOf(interceptedMetadata(tcp, { peer: "10.0.0.9:41000", certificate: {} })), {
      transport: "tls",
      address: "10.0.0.9:41000",
    });
  });

  test("with a verified client certificate: its subject in order, and its SANs", () => {
    const certificate = peerCertificate(
      { C: "DE", O: "ci", OU: ["runners", "linux"], CN: "runner-1" },
      "DNS:runner-1, DNS:runner-1.ci.example,URI:spiffe://ci.example/runner-1, IP Address:10.0.0.9",
    );
    assert.deepEqual(callerOf(interceptedMetadata(tcp, { peer: "10.0.0.9:41000", certificate })), {
      transport: "tls",
      address: "10.0.0.9:41000",
      subject: "C=DE,O=ci,OU=runners+linux,CN=runner-1",
      sans: [
        "DNS:runner-1",
        "DNS:runner-1.ci.example",
        "URI:spiffe://ci.example/runner-1",
        "IP Address:10.0.0.9",
      ],
    });
    assert.deepEqual(
      callerOf(interceptedMetadata(tcp, { peer: "p", certificate: peerCertificate({ CN: "bare" }) }))?.sans,
      [],
      "no SAN extension: no SANs",
    );
  });

  test("a caller a client puts in its metadata is dropped for the real one", () => {
    const forged: Caller = { transport: "tls", address: "x", subject: "CN=admin", sans: ["DNS:admin"] };
    const metadata = interceptedMetadata(
      unix,
      { peer: "unknown" },
      { "berth-internal-caller": JSON.stringify(forged) },
    );
    assert.equal(
      metadata.getAll("berth-internal-caller").length,
      1,
      "one value, not the client's and berth's",
    );
    assert.deepEqual(callerOf(metadata), { transport: "unix", address: "unix:///run/berth/berth.sock" });
    const overTcp = interceptedMetadata(
      tcp,
      { peer: "127.0.0.1:1" },
      { "Berth-Internal-Caller": JSON.stringify(forged) },
    );
    assert.equal(callerOf(overTcp)?.subject, undefined, "metadata keys are case-insensitive");
  });

  test("no recorded caller is undefined", () => {
    assert.equal(callerOf({ get: () => undefined }), undefined);
  });
});

describe("the allow-list", () => {
  const runner: Caller = {
    transport: "tls",
    address: "10.0.0.9:41000",
    subject: "O=ci,CN=runner-1",
    sans: ["DNS:runner-1.ci.example", "URI:spiffe://ci.example/runner-1"],
  };

  test("an entry matches a SAN, the whole subject, the common name, or CN=common name", () => {
    for (const entry of [
      "DNS:runner-1.ci.example",
      "URI:spiffe://ci.example/runner-1",
      "O=ci,CN=runner-1",
      "runner-1",
      "CN=runner-1",
    ]) {
      assert.equal(callerAllowed(runner, ["someone-else", entry]), true, entry);
    }
  });

  test("nothing else matches: other names, parts of names, other fields, SANs without their type", () => {
    for (const entry of [
      "runner-2",
      "runner",
      "runner-1.ci.example",
      "O=ci",
      "ci",
      "CN=runner-1,O=ci",
      "DNS:runner-1",
      "spiffe://ci.example/runner-1",
      "cn=runner-1",
    ]) {
      assert.equal(callerAllowed(runner, [entry]), false, entry);
    }
    assert.equal(callerAllowed(runner, []), false, "an empty list lets nobody in");
  });

  test("a caller without a certificate subject is never allowed, whatever the list", () => {
    const list = ["127.0.0.1:50412", "unix:///run/berth/berth.sock", "tcp", ""];
    assert.equal(callerAllowed(undefined, list), false);
    assert.equal(callerAllowed({ transport: "tcp", address: "127.0.0.1:50412" }, list), false);
    assert.equal(callerAllowed({ transport: "unix", address: "unix:///run/berth/berth.sock" }, list), false);
    assert.equal(
      callerAllowed({ transport: "tls", address: "x", sans: ["DNS:runner-1"] }, ["DNS:runner-1"]),
      false,
    );
  });

  test("a certificate without a common name matches by SAN or subject only", () => {
    const noCn: Caller = { transport: "tls", address: "x", subject: "O=ci", sans: ["DNS:a"] };
    assert.equal(callerAllowed(noCn, ["DNS:a"]), true);
    assert.equal(callerAllowed(noCn, ["O=ci"]), true);
    assert.equal(callerAllowed(noCn, ["undefined", "CN="]), false);
  });

  test("a comma in another field cannot pass for a common name, nor a SAN holding a comma for another SAN", () => {
    // A certificate the trusted CA signed for "attacker", whose organisation is worded to look like a CN.
    const certificate = peerCertificate(
      { O: "evil,CN=runner-1", CN: "attacker" },
      'URI:"spiffe://x, DNS:runner-1", DNS:attacker',
    );
    const caller = callerOf(interceptedMetadata(tcp, { peer: "10.0.0.66:41000", certificate }));
    assert.equal(caller?.subject, "O=evil\\,CN\\=runner-1,CN=attacker");
    assert.deepEqual(caller?.sans, ['URI:"spiffe://x, DNS:runner-1"', "DNS:attacker"]);
    for (const entry of ["runner-1", "CN=runner-1", "DNS:runner-1", "CN=undefined"]) {
      assert.equal(callerAllowed(caller, [entry]), false, entry);
    }
    assert.equal(callerAllowed(caller, ["attacker"]), true, "its own common name still matches");
    assert.equal(callerAllowed(caller, ["CN=undefined"]), false);
  });

  test("the caller as the interceptor records it is matched the same way", () => {
    const certificate = peerCertificate({ O: "ci", CN: "runner-1" }, "DNS:runner-1.ci.example");
    const caller = callerOf(interceptedMetadata(tcp, { peer: "10.0.0.9:41000", certificate }));
    assert.equal(callerAllowed(caller, ["runner-1"]), true);
    assert.equal(callerAllowed(caller, ["DNS:runner-1.ci.example"]), true);
    assert.equal(callerAllowed(caller, ["runner-2"]), false);
  });
});

describe("how a caller is named in logs and errors", () => {
  test("by certificate with SANs, by certificate alone, by transport and address, or as unknown", () => {
    assert.equal(
      describeCaller({ transport: "tls", address: "x", subject: "CN=runner-1", sans: ["DNS:a", "DNS:b"] }),
      "client certificate CN=runner-1 (DNS:a, DNS:b)",
    );
    assert.equal(
      describeCaller({ transport: "tls", address: "x", subject: "CN=runner-1", sans: [] }),
      "client certificate CN=runner-1",
    );
    assert.equal(
      describeCaller({ transport: "tcp", address: "127.0.0.1:50412" }),
      "tcp peer 127.0.0.1:50412",
    );
    assert.equal(describeCaller({ transport: "tls", address: "10.0.0.9:1" }), "tls peer 10.0.0.9:1");
    assert.equal(describeCaller(undefined), "an unknown caller");
  });
});
