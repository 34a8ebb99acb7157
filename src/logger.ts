import { pino, type Logger } from "pino";
import { createRequire } from "node:module";
import type PinoPretty from "pino-pretty";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** JSON lines by default; human-readable when stderr is a terminal. Logs go to stderr, keeping stdout for output. */
export function createLogger(level: LogLevel, options: { pretty?: boolean } = {}): Logger {
  const usePretty = options.pretty ?? process.stderr.isTTY;
  const destination = usePretty
    ? prettyStream()({ destination: 2, colorize: true, sync: true })
    : pino.destination(2);
  return pino({ level, base: { name: "berth" } }, destination);
}

/** Loaded only when a person reads the logs on a terminal: a daemon logging JSON does not carry its 30 modules. */
function prettyStream(): typeof PinoPretty {
  return createRequire(import.meta.url)("pino-pretty") as typeof PinoPretty;
}
