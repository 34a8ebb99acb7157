import { test } from "node:test";
import assert from "node:assert/strict";
import { Status } from "nice-grpc";
import { BerthError } from "./errors.js";
import { maxEnvFileBytes, parseEnvFile } from "./env-file.js";

/** Asserts that parsing fails with INVALID_ARGUMENT and exactly this message. */
function assertRefused(content: string, message: string | RegExp): void {
  assert.throws(
    () => parseEnvFile(content),
    (err: unknown) => {
      assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
      assert.equal(err.code, Status.INVALID_ARGUMENT);
      if (typeof message === "string") assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

test("maxEnvFileBytes is one MiB", () => {
  assert.equal(maxEnvFileBytes, 1048576);
});

test("plain NAME=value lines", () => {
  assert.deepEqual(parseEnvFile("A=1\nB=two words\nEMPTY=\n"), { A: "1", B: "two words", EMPTY: "" });
});

test("the value is everything after the first '=', verbatim", () => {
  assert.deepEqual(parseEnvFile("URL=https://x.test/?a=b&c=d\nSPACED=  padded  \nEQ==\n"), {
    URL: "https://x.test/?a=b&c=d",
    SPACED: "  padded  ",
    EQ: "=",
  });
});

test("empty content and empty lines set nothing", () => {
  assert.deepEqual(parseEnvFile(""), {});
  assert.deepEqual(parseEnvFile("\n\n\r\n"), {});
  assert.deepEqual(parseEnvFile("\nA=1\n\n\nB=2"), { A: "1", B: "2" });
});

test("a heredoc block joins its lines with \\n, without a trailing newline", () => {
  const content = "BEFORE=x\nMULTI<<EOF\nline one\n\n  line three  \nEOF\nAFTER=y\n";
  assert.deepEqual(parseEnvFile(content), {
    BEFORE: "x",
    MULTI: "line one\n\n  line three  ",
    AFTER: "y",
  });
});

test("an empty heredoc block is the empty string", () => {
  assert.deepEqual(parseEnvFile("E<<END\nEND\nX=1\n"), { E: "", X: "1" });
});

test("lines inside a block that look like assignments are part of the value", () => {
  assert.deepEqual(parseEnvFile("BLOCK<<ghadelimiter_1\nX=y\nZ<<W\nghadelimiter_1\n"), {
    BLOCK: "X=y\nZ<<W",
  });
});

test("only a line that is exactly the delimiter ends a block", () => {
  assert.deepEqual(parseEnvFile("B<<EOF\n EOF\nEOF \nEOFX\nEOF\n"), { B: " EOF\nEOF \nEOFX" });
});

test("'=' before '<<' is an assignment; '<<' before '=' is a block", () => {
  assert.deepEqual(parseEnvFile("A=x<<y\n"), { A: "x<<y" });
  assert.deepEqual(parseEnvFile("A<<E=F\nv\nE=F\n"), { A: "v" });
});

test("CRLF line endings are tolerated, including on the delimiter line", () => {
  const content = "A=1\r\nM<<EOF\r\nfirst\r\n\r\nsecond\r\nEOF\r\nB=x=y\r\n";
  assert.deepEqual(parseEnvFile(content), { A: "1", M: "first\n\nsecond", B: "x=y" });
});

test("later assignments override earlier ones, whatever their form", () => {
  assert.deepEqual(parseEnvFile("A=1\nB=1\nA=2\nB<<E\nblock\nE\nA<<E\nx\nE\nA=3\n"), {
    A: "3",
    B: "block",
  });
});

test("unicode names and values are kept", () => {
  const parsed = parseEnvFile("GREETING=héllo wörld ✓ 日本語 🚀\nMULTI<<Ω\nα\nβ\nΩ\n");
  assert.deepEqual(parsed, { GREETING: "héllo wörld ✓ 日本語 🚀", MULTI: "α\nβ" });
});

test("a name like __proto__ is an ordinary variable", () => {
  const parsed = parseEnvFile("__proto__=x\nconstructor=y\n");
  assert.deepEqual(Object.keys(parsed), ["__proto__", "constructor"]);
  assert.equal(Object.getOwnPropertyDescriptor(parsed, "__proto__")?.value, "x");
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.equal({ ...parsed }["constructor"], "y");
});

test("a line that is neither form is refused with its line number, never its text", () => {
  assertRefused(
    "A=1\n\nno equals here\n",
    "env file line 3: expected NAME=value or NAME<<DELIMITER, got a line of 14 characters with neither",
  );
  assertRefused(
    "A=1\r\nB\r\n",
    "env file line 2: expected NAME=value or NAME<<DELIMITER, got a line of 1 characters with neither",
  );
  // A PEM key written without a heredoc: the error must not carry any of it.
  const key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
  assert.throws(
    () => parseEnvFile(`KEY=${key}`),
    (err: Error) => /^env file line 2: /.test(err.message) && !err.message.includes("MIIE"),
  );
});

test("an empty name is refused with its line number", () => {
  assertRefused("A=1\n=value\n", 'env file line 2: the name before "=" is empty; expected NAME=value');
  assertRefused(
    "A=1\nB=2\n<<EOF\nx\nEOF\n",
    'env file line 3: the name before "<<" is empty; expected NAME<<DELIMITER',
  );
});

test("a block without a delimiter is refused", () => {
  assertRefused(
    "A=1\nB<<\nx\n",
    'env file line 2: the delimiter after "B<<" is empty; expected NAME<<DELIMITER',
  );
});

test("a block that is never closed is refused with the line that opened it", () => {
  assertRefused(
    "A=1\n\nNAME<<EOF\nline\nEOF \n",
    "env file line 3: the block for NAME is never closed (its 3-character delimiter never stands alone on a line); a NAME<<DELIMITER block ends with a line holding just DELIMITER",
  );
  // The delimiter of an earlier block does not close a later one.
  assertRefused("X<<ONE\nONE\nY<<TWO\nONE\n", /^env file line 3: the block for Y is never closed/);
});

test("errors after a block count the block's lines", () => {
  assertRefused("M<<E\na\nb\nE\nbad\n", /^env file line 5: expected NAME=value/);
});

test("NUL bytes in names or values are refused", () => {
  assertRefused("A=x\0y\n", "env file line 1: the value of A contains a NUL byte");
  assertRefused("OK=1\nA\0B=x\n", "env file line 2: a variable name contains a NUL byte");
  assertRefused("M<<E\na\0\nE\n", "env file line 1: the value of M contains a NUL byte");
});
