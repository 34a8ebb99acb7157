/**
 * A TCP listener's TLS files, as a grpc-js certificate provider that is
 * never without a usable certificate. grpc-js's own FileWatcher provider
 * reads the files asynchronously after the server is created, and a
 * listener drops every connection until that read completes (so a client
 * calling right after startup can be refused); on each refresh it also
 * publishes whatever it read, so a rotation caught half-way (the new
 * certificate beside the old key) leaves the listener with no valid
 * context until the next refresh. Here the files are read and checked
 * before the listener exists, and a refresh takes effect only when the
 * certificate, key and CA it read make a working set; otherwise the
 * previous set stays in use and the problem is logged.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import type { experimental } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { failedPrecondition, messageOf } from "./errors.js";

export interface TlsFilePaths {
  cert: string;
  key: string;
  /** CA for client certificates (mutual TLS). */
  clientCa?: string;
}

interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

/** Reads the files and checks that they make a TLS context; throws FAILED_PRECONDITION naming the problem. */
export function readTlsFiles(paths: TlsFilePaths): TlsMaterial {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw failedPrecondition(`cannot read TLS ${what} ${file}: ${messageOf(err)}`);
    }
  };
  const material: TlsMaterial = {
    cert: read(paths.cert, "certificate"),
    key: read(paths.key, "key"),
    ...(paths.clientCa === undefined ? {} : { ca: read(paths.clientCa, "client CA") }),
  };
  try {
    createSecureContext(material);
  } catch (err) {
    throw failedPrecondition(
      `TLS files ${[paths.cert, paths.key, paths.clientCa].filter(Boolean).join(", ")} do not make a working set: ${messageOf(err)}`,
    );
  }
  return material;
}

function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  const same = (x?: Buffer, y?: Buffer) =>
    x === undefined ? y === undefined : y !== undefined && x.equals(y);
  return same(a.cert, b.cert) && same(a.key, b.key) && same(a.ca, b.ca);
}

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export class TlsFileProvider implements experimental.CertificateProvider {
  private current: TlsMaterial;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private timer?: NodeJS.Timeout;

  /** Reads the files now: throws FAILED_PRECONDITION if they cannot be used. */
  constructor(
    private readonly paths: TlsFilePaths,
    private readonly reloadIntervalMs: number,
    private readonly logger: Logger,
  ) {
    this.current = readTlsFiles(paths);
  }

  /** Reads the files again; a working set that differs from the one in use replaces it. */
  reload(): void {
    let next: TlsMaterial;
    try {
      next = readTlsFiles(this.paths);
    } catch (err) {
      this.logger.warn(
        { err: messageOf(err) },
        "the TLS files cannot be used as they are now (a rotation under way?); the listener keeps the certificate it has",
      );
      return;
    }
    if (sameMaterial(next, this.current)) return;
    this.current = next;
    this.logger.info({ cert: this.paths.cert }, "TLS files changed: new connections use them");
    // The CA first: for a moment the new CA sits beside the old certificate, which still works.
    for (const listener of this.caListeners) listener(this.caUpdate());
    for (const listener of this.identityListeners) listener(this.identityUpdate());
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    this.watch();
    // grpc-js registers its watcher right after adding the listeners: answer once it has.
    process.nextTick(() => this.caListeners.has(listener) && listener(this.caUpdate()));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
    this.unwatchIfUnused();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    this.watch();
    process.nextTick(() => this.identityListeners.has(listener) && listener(this.identityUpdate()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
    this.unwatchIfUnused();
  }

  private caUpdate(): experimental.CaCertificateUpdate | null {
    return this.current.ca ? { caCertificate: this.current.ca } : null;
  }

  private identityUpdate(): experimental.IdentityCertificateUpdate {
    return { certificate: this.current.cert, privateKey: this.current.key };
  }

  private watch(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.reload(), this.reloadIntervalMs);
    this.timer.unref();
  }

  private unwatchIfUnused(): void {
    if (this.caListeners.size > 0 || this.identityListeners.size > 0) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
