import { invalidArgument } from "./errors.js";

/**
 * Parsing of the file a step writes its environment changes to (GITHUB_ENV).
 *
 * The format, as the GitHub Actions runner reads it:
 *
 * - `NAME=value`: the value is everything after the first "=", verbatim
 *   (spaces and further "=" included).
 * - `NAME<<DELIMITER`, then any lines, then a line that is exactly
 *   `DELIMITER`: the value is the lines in between joined by "\n", without a
 *   trailing newline (no lines: the empty string).
 * - A line holding both "=" and "<<" is decided by which comes first, so
 *   `A=x<<y` sets A to "x<<y" and `A<<EOF` opens a block.
 * - Empty lines between assignments are skipped (inside a block they are part
 *   of the value); a "\r" ending a line is dropped, so CRLF files work.
 * - Later assignments override earlier ones.
 *
 * Anything else is an INVALID_ARGUMENT error naming the 1-based line, and so
 * is a NUL byte in a name or value, which no process environment can hold.
 * Errors name lines, lengths and variable names, never a line's text or a
 * value: a secret written without a heredoc (a PEM key) must not reach a log.
 */

/** The most of an env file that callers read; a larger file is refused. */
export const maxEnvFileBytes = 1024 * 1024;

/** Parses GITHUB_ENV content into the variables it sets. */
export function parseEnvFile(content: string): Record<string, string> {
  const lines = content.split("\n").map((line) => (line.endsWith("\r") ? line.slice(0, -1) : line));
  // A Map, then own properties: a name like "__proto__" stays an ordinary key.
  const vars = new Map<string, string>();
  const fail = (index: number, what: string) => invalidArgument(`env file line ${index + 1}: ${what}`);
  const set = (index: number, name: string, value: string) => {
    if (name.includes("\0")) throw fail(index, "a variable name contains a NUL byte");
    if (value.includes("\0")) throw fail(index, `the value of ${name} contains a NUL byte`);
    vars.delete(name); // keep the order of the last assignment
    vars.set(name, value);
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const equals = line.indexOf("=");
    const heredoc = line.indexOf("<<");

    if (equals !== -1 && (heredoc === -1 || equals < heredoc)) {
      const name = line.slice(0, equals);
      if (name === "") throw fail(i, `the name before "=" is empty; expected NAME=value`);
      set(i, name, line.slice(equals + 1));
      continue;
    }

    if (heredoc !== -1) {
      const name = line.slice(0, heredoc);
      const delimiter = line.slice(heredoc + 2);
      if (name === "") throw fail(i, `the name before "<<" is empty; expected NAME<<DELIMITER`);
      if (delimiter === "") {
        throw fail(i, `the delimiter after "${name}<<" is empty; expected NAME<<DELIMITER`);
      }
      const end = lines.indexOf(delimiter, i + 1);
      if (end === -1) {
        throw fail(
          i,
          `the block for ${name} is never closed (its ${delimiter.length}-character delimiter never stands alone on a line); a NAME<<DELIMITER block ends with a line holding just DELIMITER`,
        );
      }
      set(i, name, lines.slice(i + 1, end).join("\n"));
      i = end;
      continue;
    }

    throw fail(
      i,
      `expected NAME=value or NAME<<DELIMITER, got a line of ${line.length} characters with neither`,
    );
  }

  return Object.fromEntries(vars);
}
