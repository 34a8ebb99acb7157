/**
 * What an Exec may ask for, checked before any driver sees it: argv and env
 * as a process can hold them (no NUL byte, within Linux's limits), refused
 * with INVALID_ARGUMENT naming the argument's position or the variable's
 * name and the limit, never a value. And the other way: a backend's own
 * message about a failed command must not carry the env's values to the job
 * log, so they are replaced by the variable's name.
 */
import { BerthError, invalidArgument } from "./errors.js";
import type { ExecResult, ExecSpec } from "./driver.js";

/** Linux's MAX_ARG_STRLEN: the longest single argument or NAME=value string execve takes. */
export const maxArgumentBytes = 128 * 1024;
/** argv and env together; Linux takes about 2 MiB with the default stack limit, so a margin is left. */
export const maxCommandBytes = 1024 * 1024;

export function checkExecSpec(spec: ExecSpec): void {
  let total = 0;
  for (const [index, argument] of spec.command.entries()) {
    const where = index === 0 ? "the program name" : `argument ${index} of the command`;
    if (argument.includes("\0"))
      throw invalidArgument(`${where} contains a NUL byte, which no process can be given`);
    const bytes = Buffer.byteLength(argument);
    if (bytes > maxArgumentBytes) {
      throw invalidArgument(
        `${where} is ${bytes} bytes; one argument may have at most ${maxArgumentBytes} (Linux's MAX_ARG_STRLEN); pass large data in a file`,
      );
    }
    total += bytes + 1;
  }
  total += checkEnv(spec.env, "the Exec's env");
  if (total > maxCommandBytes) {
    throw invalidArgument(
      `the command's arguments and env are ${total} bytes together; at most ${maxCommandBytes} are taken (${spec.command.length} arguments, ${Object.keys(spec.env).length} variables)`,
    );
  }
  checkUser(spec.user);
}

/** The highest uid or gid Docker, Kubernetes and Linux's user namespaces take. */
const maxId = 2 ** 31 - 1;

/** user: empty, or a name or uid with an optional ":group" or ":gid", as Docker and Kubernetes read it. */
function checkUser(user: string): void {
  if (user.includes("\0") || user.length > 256) {
    throw invalidArgument("user holds a NUL byte or is longer than 256 characters");
  }
  if (user === "") return;
  const parts = user.split(":");
  if (parts.length > 2 || parts.some((part) => part === "")) {
    throw invalidArgument('user must be "name", "uid", "name:group" or "uid:gid"');
  }
  for (const [index, part] of parts.entries()) {
    if (/^[-+]?\d+$/.test(part) && !(Number(part) >= 0 && Number(part) <= maxId)) {
      throw invalidArgument(`user: a ${index === 0 ? "uid" : "gid"} must be a number from 0 to ${maxId}`);
    }
  }
}

/** Checks env names and values as a process can hold them; returns their size as execve counts it. */
export function checkEnv(env: Record<string, string>, what: string): number {
  let total = 0;
  for (const [position, [name, value]] of Object.entries(env).entries()) {
    if (name === "" || name.includes("=") || name.includes("\0")) {
      throw invalidArgument(
        `${what}: variable ${position + 1} has an empty name or one holding "=" or a NUL byte; names are NAME in NAME=value`,
      );
    }
    if (value.includes("\0")) {
      throw invalidArgument(`${what}: the value of ${name} contains a NUL byte, which no process can hold`);
    }
    const bytes = Buffer.byteLength(name) + 1 + Buffer.byteLength(value);
    if (bytes > maxArgumentBytes) {
      throw invalidArgument(
        `${what}: ${name} is ${bytes} bytes; one variable may have at most ${maxArgumentBytes} (Linux's MAX_ARG_STRLEN); pass large data in a file`,
      );
    }
    total += bytes + 1;
  }
  return total;
}

/** Values shorter than this are not hunted for in messages: they would match ordinary words. */
const shortestRedacted = 4;

/** The text with every env value of the Exec (of some length) replaced by the variable's name. */
export function redactEnvValues(text: string, env: Record<string, string>): string {
  const values = Object.entries(env)
    .filter(([, value]) => value.length >= shortestRedacted)
    .sort(([, a], [, b]) => b.length - a.length);
  let redacted = text;
  for (const [name, value] of values) redacted = redacted.split(value).join(`<value of ${name}>`);
  return redacted;
}

/** An Exec's result with the env's values taken out of its message. */
export function redactResult(result: ExecResult, env: Record<string, string>): ExecResult {
  if (result.kind === "failed") return { ...result, message: redactEnvValues(result.message, env) };
  return result.message === undefined ? result : { ...result, message: redactEnvValues(result.message, env) };
}

/** An error of a driver's Exec with the env's values taken out of its message. */
export function redactError(err: unknown, env: Record<string, string>): unknown {
  if (!(err instanceof BerthError)) return err;
  const message = redactEnvValues(err.message, env);
  return message === err.message ? err : new BerthError(err.code, message, { cause: err });
}
