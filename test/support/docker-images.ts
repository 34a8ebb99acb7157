/**
 * Docker test images, built locally: CI has no container registry, so nothing
 * can be pulled. Every image starts from a root filesystem made of the host's
 * static busybox (Debian's busybox-static) and is labelled `berth.test=1`.
 *
 * Test files that need Docker start with
 *
 *   const docker = await dockerTestOptions();
 *   describe("…", docker, () => { before(ensureTestImages); … });
 *
 * so that they are skipped where no engine answers, unless
 * BERTH_REQUIRE_DOCKER=1 (CI sets it), where they fail instead.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  access,
  chmod,
  constants,
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Docker from "dockerode";

export const testImages = {
  busybox: "berth-test/busybox:1",
  web: "berth-test/web:1",
  healthy: "berth-test/healthy:1",
  unhealthy: "berth-test/unhealthy:1",
} as const;

export type TestImage = (typeof testImages)[keyof typeof testImages];

/** What `web` (and so `healthy`) serves at `/`. */
export const webIndexHtml = "hello from web\n";

// ---------------------------------------------------------------------------
// The docker CLI

export interface DockerCliResult {
  stdout: string;
  stderr: string;
}

export class DockerCliError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    const said = (stderr.trim() || stdout.trim()).split("\n").slice(-20).join("\n");
    super(`\`docker ${args.join(" ")}\` failed (exit ${exitCode}): ${said || "(no output)"}`);
    this.name = "DockerCliError";
  }
}

/**
 * Runs the docker CLI and resolves with its output; rejects with a
 * DockerCliError that quotes stderr. The legacy builder is forced
 * (DOCKER_BUILDKIT=0): Debian's docker.io has no buildx, and the builds here
 * need none of BuildKit.
 */
export function dockerCli(
  args: readonly string[],
  options: { timeoutMs?: number; cwd?: string } = {},
): Promise<DockerCliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      "docker",
      args,
      {
        cwd: options.cwd,
        env: { ...process.env, DOCKER_BUILDKIT: "0" },
        timeout: options.timeoutMs ?? 300_000,
        maxBuffer: 64 * 1024 * 1024,
        encoding: "utf8",
      },
      (error, stdout, stderr) => {
        if (!error) return resolve({ stdout, stderr });
        if ((error as NodeJS.ErrnoException).code === "ENOENT" && stdout === "" && stderr === "") {
          return reject(new Error("the docker CLI is not installed (apt-get install docker.io)"));
        }
        const exitCode = error.killed ? `killed by ${error.signal ?? "timeout"}` : (error.code ?? null);
        reject(new DockerCliError(args, exitCode, stdout, stderr));
      },
    );
  });
}

// ---------------------------------------------------------------------------
// Is there an engine?

let availability: Promise<string | undefined> | undefined;

/** Why no engine answers, or undefined when one does. Asked once per process. */
function unavailableReason(): Promise<string | undefined> {
  availability ??= new Docker({ timeout: 5_000 }).ping().then(
    () => undefined,
    (error: unknown) => (error instanceof Error ? error.message : String(error)),
  );
  return availability;
}

/** True when a Docker engine answers a ping (DOCKER_HOST or the default socket). */
export async function dockerAvailable(): Promise<boolean> {
  return (await unavailableReason()) === undefined;
}

export const dockerSkipMessage =
  "no Docker engine reachable (set BERTH_REQUIRE_DOCKER=1 to make this a failure)";

/** BERTH_REQUIRE_DOCKER is on unless unset, empty, "0" or "false". */
export function dockerRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = (env.BERTH_REQUIRE_DOCKER ?? "").trim().toLowerCase();
  return value !== "" && value !== "0" && value !== "false";
}

/**
 * The decision of dockerTestOptions, given why no engine answers (undefined:
 * it does). Throws when the engine is required but missing.
 */
export function dockerTestOptionsFor(
  reason: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): { skip: string | false } {
  if (reason === undefined) return { skip: false };
  if (dockerRequired(env)) {
    throw new Error(
      `BERTH_REQUIRE_DOCKER=${env.BERTH_REQUIRE_DOCKER} but no Docker engine answers (${reason}). ` +
        "Start dockerd (see .ci/run), or unset BERTH_REQUIRE_DOCKER to skip the Docker tests.",
    );
  }
  return { skip: dockerSkipMessage };
}

/**
 * Options for a node:test describe()/test() that needs Docker:
 * `{ skip: false }` when an engine answers, `{ skip: "…" }` when none does,
 * and a thrown Error instead of a skip when BERTH_REQUIRE_DOCKER=1.
 */
export async function dockerTestOptions(): Promise<{ skip: string | false }> {
  return dockerTestOptionsFor(await unavailableReason());
}

// ---------------------------------------------------------------------------
// The images

const testLabel = "berth.test";
/** A hash of how an image is made; an image whose label differs is rebuilt. */
const recipeLabel = "berth.test.recipe";

/** Debian's busybox-static; must be static, it is the image's only binary. */
const busyboxBinary = process.env.BERTH_TEST_BUSYBOX ?? "/bin/busybox";

const passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const group = "root:x:0:\nnogroup:x:65534:\n";
const importChanges = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["sh"]'];
/** Bump when buildBusyboxRootfs changes what it lays out. */
const rootfsLayout = 1;

const webDockerfile = `FROM ${testImages.busybox}
COPY index.html /www/index.html
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
`;

const healthyDockerfile = `FROM ${testImages.web}
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD wget -q -O /dev/null http://127.0.0.1/ || exit 1
`;

const unhealthyDockerfile = `FROM ${testImages.busybox}
HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD sh -c 'echo "database not ready: connection refused" >&2; exit 1'
CMD ["sleep", "100000"]
`;

interface ImageSpec {
  tag: TestImage;
  /** The image this one is built FROM; its recipe is part of this one's. */
  parent?: ImageSpec;
  /** Everything that decides the image's content. */
  recipe: string;
  build: (labels: string[]) => Promise<void>;
}

function dockerfileSpec(
  tag: TestImage,
  parent: ImageSpec,
  dockerfile: string,
  files: Record<string, string> = {},
): ImageSpec {
  const context: Record<string, string> = { Dockerfile: dockerfile, ...files };
  return {
    tag,
    parent,
    recipe: JSON.stringify(context),
    build: (labels) => buildFromContext(tag, context, labels),
  };
}

const busyboxSpec: ImageSpec = {
  tag: testImages.busybox,
  recipe: JSON.stringify({ rootfsLayout, passwd, group, importChanges }),
  build: (labels) => importBusybox(testImages.busybox, labels),
};
const webSpec = dockerfileSpec(testImages.web, busyboxSpec, webDockerfile, { "index.html": webIndexHtml });
/** In build order: parents first. */
const imageSpecs: ImageSpec[] = [
  busyboxSpec,
  webSpec,
  dockerfileSpec(testImages.healthy, webSpec, healthyDockerfile),
  dockerfileSpec(testImages.unhealthy, busyboxSpec, unhealthyDockerfile),
];

function recipeHash(spec: ImageSpec): string {
  const hash = createHash("sha256").update(spec.recipe);
  if (spec.parent) hash.update(recipeHash(spec.parent));
  return hash.digest("hex").slice(0, 16);
}

/** The recipe label of a local image, or undefined when there is no such image. */
async function localRecipe(tag: string): Promise<string | undefined> {
  try {
    const { stdout } = await dockerCli([
      "image",
      "inspect",
      "--format",
      `{{index .Config.Labels "${recipeLabel}"}}`,
      tag,
    ]);
    return stdout.trim();
  } catch (error) {
    if (error instanceof DockerCliError && /no such image/i.test(error.stderr)) return undefined;
    throw error;
  }
}

async function upToDate(spec: ImageSpec): Promise<boolean> {
  return (await localRecipe(spec.tag)) === recipeHash(spec);
}

let ensuring: Promise<void> | undefined;

/**
 * Builds every test image that is missing (or was built from another
 * recipe). Idempotent; concurrent callers in one process share one build, and
 * callers in other processes (test files run in parallel) wait on a lock file
 * in the temp directory. Each image is tagged only once fully built.
 */
export async function ensureTestImages(): Promise<void> {
  if (!ensuring) {
    const attempt = (async () => {
      const current = await Promise.all(imageSpecs.map(upToDate));
      if (current.every(Boolean)) return;
      await withImageLock(async () => {
        for (const spec of imageSpecs) {
          if (await upToDate(spec)) continue;
          await spec.build([`${testLabel}=1`, `${recipeLabel}=${recipeHash(spec)}`]);
        }
      });
    })();
    ensuring = attempt;
    // A failed build is tried again by the next caller.
    void attempt.catch(() => {
      if (ensuring === attempt) ensuring = undefined;
    });
  }
  return ensuring;
}

// ---------------------------------------------------------------------------
// Building

async function withTempDir<T>(prefix: string, use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function buildFromContext(
  tag: string,
  context: Record<string, string>,
  labels: string[],
): Promise<void> {
  await withTempDir("berth-image-", async (dir) => {
    for (const [name, content] of Object.entries(context)) {
      await writeFile(join(dir, name), content, { mode: 0o644 });
    }
    await dockerCli(["build", "--force-rm", ...labels.flatMap((l) => ["--label", l]), "--tag", tag, dir]);
  });
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      error
        ? reject(new Error(`${file} ${args.join(" ")} failed: ${error.message}\n${stderr}`))
        : resolve(stdout),
    ),
  );
}

/**
 * Lays out a root filesystem whose only binary is busybox: every applet
 * linked in /bin (as `busybox --install -s /bin` would) and at its usual place
 * (/usr/bin/env, /usr/sbin/httpd, … as `busybox --install -s` would).
 */
async function buildBusyboxRootfs(root: string): Promise<void> {
  for (const dir of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/tmp"]) {
    await mkdir(join(root, dir), { recursive: true, mode: 0o755 });
  }
  await chmod(join(root, "root"), 0o700);
  await chmod(join(root, "tmp"), 0o1777);
  await chmod(join(root, "var/tmp"), 0o1777);
  await copyFile(busyboxBinary, join(root, "bin/busybox"));
  await chmod(join(root, "bin/busybox"), 0o755);
  const links = new Set<string>();
  for (const applet of (await run(busyboxBinary, ["--list-full"])).split("\n")) {
    // Skip the odd entry without a directory ("linuxrc").
    if (!applet.includes("/")) continue;
    links.add(applet);
    links.add(join("bin", basename(applet)));
  }
  links.delete("bin/busybox");
  for (const link of links) {
    await mkdir(dirname(join(root, link)), { recursive: true });
    await symlink("/bin/busybox", join(root, link));
  }
  await writeFile(join(root, "etc/passwd"), passwd, { mode: 0o644 });
  await writeFile(join(root, "etc/group"), group, { mode: 0o644 });
}

async function importBusybox(tag: string, labels: string[]): Promise<void> {
  try {
    await access(busyboxBinary, constants.X_OK);
  } catch (error) {
    throw new Error(`no ${busyboxBinary} (apt-get install busybox-static): ${(error as Error).message}`, {
      cause: error,
    });
  }
  await withTempDir("berth-busybox-", async (dir) => {
    const root = join(dir, "rootfs");
    await buildBusyboxRootfs(root);
    const archive = join(dir, "rootfs.tar");
    await run("tar", ["-C", root, "--owner=0", "--group=0", "--numeric-owner", "-cf", archive, "."]);
    // Imported under a temporary name: the real tag only once it is known to run.
    const candidate = `${tag}-candidate-${process.pid}`;
    const changes = [...importChanges, `LABEL ${labels.join(" ")}`];
    await dockerCli(["import", ...changes.flatMap((c) => ["--change", c]), archive, candidate]);
    try {
      try {
        await dockerCli(["run", "--rm", "--network", "none", candidate, "sh", "-c", "echo ok"]);
      } catch (error) {
        throw new Error(
          `the busybox image does not run; is ${busyboxBinary} statically linked (busybox-static)? ` +
            (error as Error).message,
          { cause: error },
        );
      }
      await dockerCli(["tag", candidate, tag]);
    } finally {
      // Said, not thrown: a failed removal must not hide why the image did not run.
      await dockerCli(["rmi", candidate]).catch((error: Error) =>
        process.stderr.write(`test images: could not remove ${candidate}: ${error.message}\n`),
      );
    }
  });
}

// ---------------------------------------------------------------------------
// A lock across processes: a directory renamed into place, holding its owner's pid.

const lockPath = join(tmpdir(), "berth-test-images.lock");
const lockWaitMs = 10 * 60_000;

async function lockIsStale(): Promise<boolean> {
  let owner: number;
  try {
    owner = Number.parseInt(await readFile(join(lockPath, "pid"), "utf8"), 10);
  } catch (error) {
    // Just released (or not written yet): not stale.
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
  if (!Number.isInteger(owner) || owner <= 0) return true;
  try {
    process.kill(owner, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

async function withImageLock<T>(use: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + lockWaitMs;
  for (;;) {
    const mine = await mkdtemp(`${lockPath}-`);
    await writeFile(join(mine, "pid"), `${process.pid}\n`);
    try {
      await rename(mine, lockPath);
      break;
    } catch (error) {
      await rm(mine, { recursive: true, force: true });
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
    }
    if (await lockIsStale()) {
      // Its owner died mid-build. Should two waiters both clear it, both
      // build: wasted work, no harm, since images are tagged once complete.
      await rm(lockPath, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `waited ${lockWaitMs / 1000} s for ${lockPath}; remove it if no test is building images`,
      );
    }
    await sleep(200);
  }
  try {
    return await use();
  } finally {
    await rm(lockPath, { recursive: true, force: true });
  }
}

/** Names of the containers, networks and volumes carrying a label filter (`berth.environment=<id>`). */
export function dockerObjectsLabelled(filter: string): string[] {
  const list = (args: string[], format: string) =>
    execFileSync("docker", [...args, "--filter", `label=${filter}`, "--format", format], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map((name) => `${args[0]} ${name}`);
  return [
    ...list(["ps", "-a"], "{{.Names}}"),
    ...list(["network", "ls"], "{{.Name}}"),
    ...list(["volume", "ls"], "{{.Name}}"),
  ];
}
