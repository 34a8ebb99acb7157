import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** JSON lines by default; human-readable when stderr is a terminal. Logs go to stderr, keeping stdout for output. */
export function createLogger(level: LogLevel, options: { pretty?: boolean } = {}): Logger {
  const usePretty = options.pretty ?? process.stderr.isTTY;
  const destination = usePretty
    ? pretty({ destination: 2, colorize: true, sync: true })
    : pino.destination(2);
  return pino({ level, base: { name: "berth" } }, destination);
}
