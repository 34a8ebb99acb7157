/**
 * The configuration file and `berth validate`: errors name file, line and
 * key; flags win over the file; every config example in the docs validates.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { parse } from "yaml";
import { cliPath } from "../support/daemon-process.js";

const run = promisify(execFile);
const repo = new URL("../../../", import.meta.url);

async function validate(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cliPath, "validate", ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe("berth validate", () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), "berth-config-"))));
  after(() => rm(dir, { recursive: true, force: true }));

  async function file(name: string, text: string): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  }

  test("accepts a good file, provisions its backends and says what it serves", async () => {
    const path = await file(
      "good.yaml",
      `listeners:
  - address: unix://${dir}/a.sock
    backend: one
  - address: unix://${dir}/b.sock
    backend: two
backends:
  one:
    driver: host
  two:
    driver: host
    options:
      isolation: none
`,
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /a\.sock → backend one, .*b\.sock → backend two; backends provisioned: one \(host\), two \(host\)/,
    );
  });

  test("a typo'd key is named with its file, line and column", async () => {
    const path = await file(
      "typo.yaml",
      "backends:\n  local:\n    driver: host\n    limts:\n      maxEnvironments: 2\n",
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(result.stderr, new RegExp(`${path}:4:5: backends\\.local\\.limts: unknown key`));
  });

  test("a wrong type names the key and what is expected", async () => {
    const path = await file(
      "type.yaml",
      "backends:\n  local:\n    driver: host\n    limits:\n      maxEnvironments: lots\n",
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      new RegExp(
        `${path}:5:24: backends\\.local\\.limits\\.maxEnvironments: .*expected number, received string`,
      ),
    );
  });

  test("an unknown driver is named, with the drivers berth has", async () => {
    const path = await file("driver.yaml", "backends:\n  local:\n    driver: podman\n");
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      new RegExp(
        `${path}:3:13: backends\\.local\\.driver: unknown driver "podman" \\(berth has: host, docker, kubernetes\\)`,
      ),
    );
  });

  test("a driver option is checked by the driver's own schema", async () => {
    const path = await file(
      "option.yaml",
      "backends:\n  local:\n    driver: host\n    options:\n      isolation: chroot\n      rooot: /tmp\n",
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(result.stderr, new RegExp(`${path}:5:18: backends\\.local\\.options\\.isolation: `));
    assert.match(
      result.stderr,
      new RegExp(
        `${path}:6:7: backends\\.local\\.options\\.rooot: unknown option of driver host \\(known: root,`,
      ),
    );
  });

  test("an unreadable TLS file is named with the key that points at it", async () => {
    const path = await file(
      "tls.yaml",
      `listeners:
  - address: tcp://127.0.0.1:7443
    tls:
      cert: ${dir}
      key: ${dir}/missing.key
`,
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      new RegExp(`${path}:4:13: listeners\\[0\\]\\.tls\\.cert: cannot read TLS file ${dir}: EISDIR`),
    );
    assert.match(
      result.stderr,
      new RegExp(
        `${path}:5:12: listeners\\[0\\]\\.tls\\.key: cannot read TLS file ${dir}/missing\\.key: ENOENT`,
      ),
    );
  });

  test("every problem is reported at once, and YAML syntax errors have lines too", async () => {
    const several = await file(
      "several.yaml",
      "listeners:\n  - address: tcp://0.0.0.0:80\n    insecure: true\n    backend: nowhere\nbackends:\n  a:\n    driver: host\n  b:\n    driver: host\n",
    );
    const result = await validate("--config", several);
    assert.match(
      result.stderr,
      new RegExp(`${several}:4:14: listeners\\[0\\]\\.backend: no backend "nowhere" \\(there are: a, b\\)`),
    );
    const broken = await file("broken.yaml", "backends:\n  a:\n    driver: host\n   bad indent: [\n");
    const syntax = await validate("--config", broken);
    assert.equal(syntax.code, 2);
    assert.match(syntax.stderr, new RegExp(`${broken}:\\d+:\\d+: `));
  });

  test("plain TCP on a non-loopback address is refused at validation, naming the listener", async () => {
    const path = await file(
      "insecure.yaml",
      "listeners:\n  - address: tcp://0.0.0.0:7000\n    insecure: true\n",
    );
    const result = await validate("--config", path);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      new RegExp(`${path}:2:5: listeners\\[0\\]: refusing plain TCP on 0\\.0\\.0\\.0`),
    );
  });

  test("provisioning failures stop validate with the driver's message", async () => {
    const result = await validate(
      "--backend",
      "docker",
      "--backend-opt",
      "host=unix:///nonexistent/docker.sock",
    );
    assert.notEqual(result.code, 0);
    assert.match(
      result.stderr,
      /driver docker: provision: cannot reach the Docker engine at unix:\/\/\/nonexistent\/docker\.sock/,
    );
  });
});

/** Every berth configuration in the docs: YAML blocks of README.md and CONFIG.md, and YAML files under deploy/ that are configs. */
async function documentedConfigs(): Promise<{ where: string; text: string }[]> {
  const configs: { where: string; text: string }[] = [];
  for (const doc of ["README.md", "CONFIG.md"]) {
    const text = await readFile(new URL(doc, repo), "utf8");
    for (const match of text.matchAll(/```yaml\n([\s\S]*?)```/g)) {
      const value = parse(match[1]) as Record<string, unknown> | null;
      if (value && ("listeners" in value || "backends" in value)) {
        configs.push({ where: `${doc}:${text.slice(0, match.index).split("\n").length}`, text: match[1] });
      }
    }
  }
  const deploy = new URL("deploy/", repo);
  for (const entry of await readdir(deploy, { recursive: true })) {
    if (!/\.ya?ml$/.test(entry)) continue;
    const text = await readFile(new URL(entry, deploy), "utf8");
    const value = parse(text) as Record<string, unknown> | null;
    if (value && typeof value === "object" && ("listeners" in value || "backends" in value)) {
      configs.push({ where: `deploy/${entry}`, text });
    }
  }
  return configs;
}

test("every configuration example in README.md, CONFIG.md and deploy/ passes berth validate", async () => {
  const configs = await documentedConfigs();
  assert.ok(configs.length >= 2, `found ${configs.length} examples`);
  const dir = await mkdtemp(join(tmpdir(), "berth-config-examples-"));
  try {
    for (const [index, { where, text }] of configs.entries()) {
      const path = join(dir, `example-${index}.yaml`);
      await writeFile(path, text);
      // Offline: the examples name clusters, engines and certificates that are not here.
      const result = await validate("--offline", "--config", path);
      assert.equal(result.code, 0, `${where}: ${result.stderr}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
