/**
 * The benchmark's grpc-go client (bench/go-client/): built here, and run once
 * per measured call. It stands in for Forgejo Runner, which dials berth with
 * grpc-go, so that the client's CPU in the figures is what a runner pays and
 * not the cost of berth's Node client, which on two cores takes time from
 * the daemon being measured.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository: this file runs as dist/bench/go-client.js. */
const repo = fileURLToPath(new URL("../../", import.meta.url));
const sources = join(repo, "bench", "go-client");
/** Under dist/, which git ignores and `npm run build` wipes: the build is redone then, from Go's cache. */
const binary = join(repo, "dist", "go-client", "berth-bench-client");
/** Where Go is installed from the official archive, which puts it on no PATH. */
const fallbackGo = "/usr/local/go/bin/go";

export interface GoExecResult {
  exitCode: number;
  stdoutBytes: number;
  stderrBytes: number;
  /** Wall time of the Exec call, from the call to the end of its stream. */
  seconds: number;
  /** CPU (user + system) of the whole client process, its dial and health check included. */
  cpuSeconds: number;
}

export interface GoLatencyResult {
  /** Each timed run, in order: from the Exec call to its ExecComplete. */
  ms: number[];
  cpuSeconds: number;
}

export interface GoCopyInResult {
  tarBytes: number;
  /** Wall time of the CopyIn call, packing the directory included. */
  seconds: number;
  cpuSeconds: number;
}

export interface GoCopyOutResult {
  tarBytes: number;
  /** Sum of the sizes of the regular files in the tar, and how many there were. */
  fileBytes: number;
  files: number;
  /** Wall time of the CopyOut call, reading and checking the whole tar included. */
  seconds: number;
  cpuSeconds: number;
}

/** The go command: from PATH, else the official install's place; undefined if neither has one. */
function findGo(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, "go"))) return join(dir, "go");
  }
  return existsSync(fallbackGo) ? fallbackGo : undefined;
}

/**
 * Builds the client and returns its path, or why it cannot be built here.
 * It always regenerates the protobuf code and runs `go build`: Go's build
 * cache makes a repeat take about a second, and a stale binary can never be
 * measured by mistake. The first build on a machine downloads the modules
 * and compiles grpc-go and the code generators: a minute or so.
 */
export async function buildGoClient(): Promise<string | { unavailable: string }> {
  const go = findGo();
  if (!go) return { unavailable: `no go command on PATH or at ${fallbackGo}` };
  // buf runs the code generators as `go tool ...`, so go must be on its PATH too.
  const env = { ...process.env, PATH: [dirname(go), process.env.PATH].filter(Boolean).join(delimiter) };
  await rm(join(sources, "gen"), { recursive: true, force: true });
  const buf = join(repo, "node_modules", ".bin", "buf");
  await run(
    buf,
    ["generate", repo, "--template", "buf.gen.yaml", "--path", join(repo, "proto/plugin/v1alpha")],
    {
      cwd: sources,
      env,
    },
  );
  await mkdir(dirname(binary), { recursive: true });
  await run(go, ["build", "-buildvcs=false", "-o", binary, "."], { cwd: sources, env });
  return binary;
}

/** Runs the client once and returns its JSON result. */
async function call<T>(client: string, address: string, args: string[]): Promise<T> {
  const stdout = await run(client, ["-addr", address, ...args]);
  return JSON.parse(stdout) as T;
}

/** What an ExecRequest carries besides the command: its working directory and environment variables. */
export interface GoExecOptions {
  workdir?: string;
  env?: Record<string, string>;
}

const execFlags = (options: GoExecOptions) => [
  ...(options.workdir === undefined ? [] : ["-workdir", options.workdir]),
  ...Object.entries(options.env ?? {}).flatMap(([key, value]) => ["-setenv", `${key}=${value}`]),
];

/** Runs a command in environment `id` and counts its output. */
export function goExec(
  client: string,
  address: string,
  id: string,
  command: string[],
  options: GoExecOptions = {},
): Promise<GoExecResult> {
  return call(client, address, ["exec", "-env", id, ...execFlags(options), "--", ...command]);
}

/** `warmup` untimed, then `n` timed runs of a command on one connection; each must exit 0. */
export function goLatency(
  client: string,
  address: string,
  id: string,
  command: string[],
  runs: { warmup: number; n: number },
  options: GoExecOptions = {},
): Promise<GoLatencyResult> {
  const counts = ["-warmup", String(runs.warmup), "-n", String(runs.n)];
  return call(client, address, ["latency", "-env", id, ...counts, ...execFlags(options), "--", ...command]);
}

/** Sends local directory `dir` into the environment as `dest`/`name`, packed with Go's archive/tar. */
export function goCopyIn(
  client: string,
  address: string,
  id: string,
  copy: { dir: string; dest: string; name: string },
): Promise<GoCopyInResult> {
  return call(client, address, [
    "copyin",
    "-env",
    id,
    "-dest",
    copy.dest,
    "-dir",
    copy.dir,
    "-name",
    copy.name,
  ]);
}

/** Fetches `src` from the environment as a tar, checking it is one. */
export function goCopyOut(
  client: string,
  address: string,
  id: string,
  src: string,
): Promise<GoCopyOutResult> {
  return call(client, address, ["copyout", "-env", id, "-src", src]);
}

/** Runs a program to its end and returns its stdout; rejects with the end of its stderr if it fails. */
function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    child.once("error", reject);
    child.once("close", (code, signal) =>
      code === 0
        ? resolve(stdout)
        : reject(new Error(`${command} ${args.join(" ")} failed (${code ?? signal}): ${stderr.trim()}`)),
    );
  });
}
