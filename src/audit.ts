/**
 * The audit log: one JSON line per plugin RPC, written before the RPC
 * returns, to its own destination (a file, or stdout/stderr). It says who
 * did what to which environment and how it ended; it never holds env
 * values, file contents or command arguments (they hold secrets): an Exec
 * is recorded by its argv's SHA-256 and length.
 */
import { createHash } from "node:crypto";
import { type FileHandle, open } from "node:fs/promises";
import type { Caller } from "./caller.js";
import { failedPrecondition, messageOf } from "./errors.js";

export interface AuditRecord {
  time: string;
  caller?: Caller;
  listener: string;
  protocol: string;
  backend: string;
  rpc: string;
  environmentId?: string;
  durationMs: number;
  outcome: "ok" | "error" | "cancelled";
  code: string;
  /** Exec only: which command, without its text. */
  argv?: { sha256: string; length: number; bytes: number };
}

export interface AuditLog {
  /** Resolves once the record is written (handed to the file or the stream). */
  record(entry: AuditRecord): Promise<void>;
  close(): Promise<void>;
}

/** The argv of an Exec as the audit log keeps it. */
export function argvDigest(argv: string[]): NonNullable<AuditRecord["argv"]> {
  const encoded = JSON.stringify(argv);
  return {
    sha256: createHash("sha256").update(encoded).digest("hex"),
    length: argv.length,
    bytes: Buffer.byteLength(encoded),
  };
}

/** Opens the destination: `stdout`, `stderr`, or a file appended to (created with mode 0640). */
export async function openAuditLog(destination: string): Promise<AuditLog> {
  if (destination === "stdout" || destination === "stderr") {
    const stream = destination === "stdout" ? process.stdout : process.stderr;
    return {
      record: (entry) =>
        new Promise((resolve, reject) =>
          stream.write(`${JSON.stringify(entry)}\n`, (err) => (err ? reject(err) : resolve())),
        ),
      close: async () => {},
    };
  }
  let file: FileHandle;
  try {
    file = await open(destination, "a", 0o640);
  } catch (err) {
    throw failedPrecondition(`cannot open the audit log ${destination}: ${messageOf(err)}`);
  }
  // One write at a time keeps lines whole; appends need no seek.
  let queue = Promise.resolve();
  return {
    record(entry) {
      const line = `${JSON.stringify(entry)}\n`;
      const written = queue.then(() => file.write(line).then(() => undefined));
      queue = written.catch(() => undefined);
      return written;
    },
    async close() {
      await queue;
      await file.close();
    },
  };
}
