/**
 * THE RUNNER'S CALL SEQUENCE, as a test client. Forgejo Runner cannot be
 * installed here (its Go modules are not served), so this file issues the
 * calls it issues, in its order, with its arguments, written from its source
 * and ../../../shared/PROTOCOL.md ("How the released runner drives a job"):
 *
 * - plugin.v1alpha (Forgejo Runner v13, released): act/plugin/adapter.go —
 *   Create (image "" without `container:`, label_arg, environment_timeout),
 *   Start read until start_complete, Copy → CopyIn with file entries only,
 *   Exec with the merged env and the job's WorkingDir for an empty workdir,
 *   GetContainerArchive → CopyOut read through a pipe and cancelled when
 *   its reader closes; act/container/parse_env_file.go reads the first tar
 *   entry of each env file.
 * - plugin.v1 (the plugin pull request's fork line, runner v12): the same
 *   file of that line — Create with env (KEY=VALUE) and working_dir, the
 *   label argument and the job timeout in backend_options, unary Start,
 *   UpdateEnv for the env files, CopyOut for GITHUB_PATH and the summary.
 * - act/runner/step.go and step_run.go (both lines): before each step the
 *   five file-command files are copied in empty to <act_path>, the script to
 *   <act_path>/workflow/<n>.sh, run as `sh -e <script>`; after it the five
 *   files are read back.
 *
 * Nothing of the runner is copied; this is a re-statement of what it sends.
 */
import { Readable } from "node:stream";
import type { Channel } from "nice-grpc";
import { extract } from "tar-stream";
import { type Generation, v1Client, v1alphaClient } from "../../src/client.js";
import { tarOf } from "../support/tar.js";

/** The job's working directory: /<container.workdir_parent>/<owner>/<repo>, workdir_parent's default. */
export const jobWorkdir = "/workspace/acme/widget";

/** The files a step's commands write to, under <act_path>/workflow/ (act's step.go). */
const fileCommands = {
  OUTPUT: "outputcmd.txt",
  STATE: "statecmd.txt",
  PATH: "pathcmd.txt",
  ENV: "envs.txt",
  STEP_SUMMARY: "SUMMARY.md",
} as const;

export interface RunnerJobOptions {
  generation: Generation;
  /** The runs-on label's argument (`ci:berth://busybox` → "busybox"). */
  labelArg: string;
  /** The job's `container: image:`, if any. */
  image?: string;
  services?: { name: string; image: string; env?: Record<string, string>; ports?: string[] }[];
  /** From the runner's plugin configuration. */
  backendOptions?: Record<string, string>;
  /** The runner's job timeout. */
  timeoutMs?: number;
  /** The job's env (workflow `env:`, the runner's GITHUB_* context variables). */
  env?: Record<string, string>;
  name?: string;
}

export interface StepOptions {
  /** A step's `working-directory:`, sent as written (relative ones unresolved). */
  workingDirectory?: string;
  env?: Record<string, string>;
  /** Aborting it is the runner cancelling the step (timeout-minutes, a cancelled job). */
  signal?: AbortSignal;
  /** Called with each piece of output as it arrives (the live log). */
  onOutput?: (stream: "stdout" | "stderr", data: Buffer) => void;
}

export interface StepResult {
  exitCode?: number;
  /** v1alpha ExecFailed, or v1's done.error_message. */
  failure?: string;
  stdout: string;
  stderr: string;
  /** GITHUB_OUTPUT of this step. */
  outputs: Record<string, string>;
  /** GITHUB_STEP_SUMMARY of this step. */
  summary: string;
}

interface Layout {
  rootPath: string;
  actPath: string;
  toolCachePath: string;
  tempPath: string;
  os: string;
  arch: string;
}

/**
 * The runner's reading of a GITHUB_ENV-format file (parse_env_file.go):
 * `NAME=value` lines, and `NAME<<DELIM` … `DELIM` blocks, whichever of "="
 * and "<<" comes first on the line.
 */
export function runnerParseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const single = line.indexOf("=");
    const multi = line.indexOf("<<");
    if (single !== -1 && (multi === -1 || single < multi)) {
      env[line.slice(0, single)] = line.slice(single + 1);
    } else if (multi !== -1) {
      const delimiter = line.slice(multi + 2);
      const content: string[] = [];
      let found = false;
      for (i++; i < lines.length; i++) {
        if (lines[i] === delimiter) {
          found = true;
          break;
        }
        content.push(lines[i]);
      }
      if (!found) throw new Error(`invalid format delimiter '${delimiter}' not found before end of file`);
      env[line.slice(0, multi)] = content.join("\n");
    } else {
      throw new Error(`invalid format '${line}', expected a line with '=' or '<<'`);
    }
  }
  return env;
}

/**
 * The content of the first tar entry of a CopyOut, read as the runner reads
 * it: its reader takes the first entry and closes, which cancels the call
 * mid-stream. A stream that ends with no entry is an empty file to the
 * runner (tar's EOF); a stream error fails the step, as it does there.
 */
function firstEntryThenCancel(open: (signal: AbortSignal) => AsyncIterable<Buffer>): Promise<string> {
  const cancel = new AbortController();
  const parser = extract();
  return new Promise<string>((resolve, reject) => {
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      outcome();
    };
    parser.once("entry", (_header, body, next) => {
      const parts: Buffer[] = [];
      body.on("data", (part) => parts.push(part as Buffer));
      body.once("end", () => {
        settle(() => resolve(Buffer.concat(parts).toString("utf8")));
        cancel.abort();
        next();
      });
    });
    parser.once("finish", () => settle(() => resolve("")));
    parser.once("error", (err) => settle(() => reject(err)));
    void (async () => {
      try {
        for await (const chunk of open(cancel.signal)) {
          if (settled) break;
          parser.write(chunk);
        }
        parser.end(Buffer.alloc(0));
      } catch (err) {
        if (!cancel.signal.aborted) settle(() => reject(err instanceof Error ? err : new Error(String(err))));
      }
    })();
  });
}

/** One job, driven through berth exactly as the runner drives it. */
export class RunnerJob {
  readonly generation: Generation;
  id = "";
  private layout!: Layout;
  private readonly v1;
  private readonly v1alpha;
  private imageEnv: Record<string, string> = {};
  /** The job env as the runner keeps it between steps: its own, then what GITHUB_ENV added. */
  private readonly env: Record<string, string>;
  private readonly extraPath: string[] = [];
  private stepNumber = 0;

  constructor(
    channel: Channel,
    private readonly options: RunnerJobOptions,
  ) {
    this.generation = options.generation;
    this.v1 = v1Client(channel);
    this.v1alpha = v1alphaClient(channel);
    this.env = { ...options.env };
  }

  /** Capabilities, Create, Start (steps 1 and 2). */
  async createAndStart(): Promise<void> {
    const { options } = this;
    const name = options.name ?? "task-123_WORKFLOW-ci_JOB-build";
    if (this.generation === "v1alpha") {
      await this.v1alpha.raw.capabilities({});
      const timeoutMs = options.timeoutMs ?? 0;
      const created = await this.v1alpha.raw.create({
        image: options.image ?? "",
        name,
        capAdd: [],
        capDrop: [],
        services: (options.services ?? []).map((s) => ({ env: {}, ports: [], ...s })),
        backendOptions: options.backendOptions ?? {},
        labelArg: options.labelArg,
        environmentTimeout: { seconds: Math.floor(timeoutMs / 1000), nanos: (timeoutMs % 1000) * 1e6 },
      });
      this.id = created.environmentId;
      this.layout = created;
      for await (const message of this.v1alpha.raw.start({ environmentId: this.id })) {
        if (message.output?.$case === "startComplete") {
          this.imageEnv = message.output.value.imageEnv;
          break;
        }
      }
    } else {
      const caps = await this.v1.raw.capabilities({});
      this.layout = {
        ...caps,
        tempPath: caps.runnerContext.temp ?? "",
        os: caps.runnerContext.os ?? "",
        arch: caps.runnerContext.arch ?? "",
      };
      const hours = Math.floor((options.timeoutMs ?? 10_799_900) / 3_600_000);
      const rest = ((options.timeoutMs ?? 10_799_900) % 3_600_000) / 1000;
      const created = await this.v1.raw.create({
        image: options.image ?? options.labelArg,
        name,
        env: Object.entries(this.env).map(([k, v]) => Buffer.from(`${k}=${v}`)),
        workingDir: jobWorkdir,
        capAdd: [],
        capDrop: [],
        services: (options.services ?? []).map((s) => ({ env: {}, ports: [], ...s })),
        backendOptions: {
          ...options.backendOptions,
          label_arg: options.labelArg,
          job_timeout: `${hours}h${Math.floor(rest / 60)}m${(rest % 60).toFixed(1)}s`,
        },
        forcePull: false,
        platform: "",
      });
      this.id = created.environmentId;
      this.imageEnv = (await this.v1.raw.start({ environmentId: this.id })).imageEnv;
    }
  }

  /** Step 3 and the start of 4: event.json and envs.txt copied in, then `mkdir -p` of the job directory in it. */
  async setUp(event: object = { ref: "refs/heads/main" }): Promise<StepResult> {
    await this.copyIn(`${this.layout.actPath}/`, [
      { name: "workflow/event.json", mode: 0o644, content: JSON.stringify(event) },
      { name: "workflow/envs.txt", mode: 0o666, content: "" },
    ]);
    return this.exec(["mkdir", "-p", jobWorkdir], {});
  }

  /** One `run:` step with `shell: sh` (act's `sh -e {0}`), and the reading of its file commands. */
  async step(script: string, options: StepOptions = {}): Promise<StepResult> {
    const { actPath } = this.layout;
    const number = ++this.stepNumber;
    const stepEnv: Record<string, string> = { GITHUB_WORKSPACE: jobWorkdir, "INPUT_FETCH-DEPTH": "1" };
    for (const [key, file] of Object.entries(fileCommands)) {
      for (const prefix of ["FORGEJO", "GITHUB"]) stepEnv[`${prefix}_${key}`] = `${actPath}/workflow/${file}`;
    }
    await this.copyIn(
      actPath,
      Object.values(fileCommands).map((file) => ({ name: `workflow/${file}`, mode: 0o666, content: "" })),
    );
    const scriptPath = `${actPath}/workflow/${number}.sh`;
    await this.copyIn(actPath, [{ name: `workflow/${number}.sh`, mode: 0o755, content: script }]);
    const result = await this.exec(["sh", "-e", scriptPath], {
      ...options,
      env: { ...stepEnv, ...options.env },
    });
    await this.readFileCommands(result);
    return result;
  }

  /** Step 6: Remove. */
  async remove(): Promise<void> {
    if (!this.id) return;
    await (this.generation === "v1alpha" ? this.v1alpha : this.v1).remove(this.id);
  }

  private async copyIn(destPath: string, files: { name: string; mode: number; content: string }[]) {
    const tar = await tarOf(files.map((file) => ({ ...file, type: "file" as const })));
    await (this.generation === "v1alpha" ? this.v1alpha : this.v1).copyIn(
      this.id,
      destPath,
      Readable.from([tar]),
    );
  }

  /** The env of an Exec: RUNNER_* from the layout, then the job env, then the step's (adapter.go). */
  private execEnv(stepEnv: Record<string, string> = {}): Record<string, string> {
    const imagePath = this.imageEnv.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    return {
      RUNNER_TOOL_CACHE: this.layout.toolCachePath,
      RUNNER_TEMP: this.layout.tempPath,
      RUNNER_OS: this.layout.os,
      RUNNER_ARCH: this.layout.arch,
      ...this.imageEnv,
      ...this.env,
      PATH: [...this.extraPath, this.env.PATH ?? imagePath].join(":"),
      ...stepEnv,
    };
  }

  private async exec(command: string[], options: StepOptions): Promise<StepResult> {
    const result: StepResult = { stdout: "", stderr: "", outputs: {}, summary: "" };
    const onOutput = (stream: "stdout" | "stderr", data: Buffer) => {
      result[stream] += data.toString();
      options.onOutput?.(stream, data);
    };
    const request = {
      env: this.execEnv(options.env),
      // v1alpha's adapter replaces an empty workdir by the job's WorkingDir; v1's sends it empty
      // (the environment's working_dir applies). A relative one goes as written in both.
      workdir: options.workingDirectory ?? (this.generation === "v1alpha" ? jobWorkdir : ""),
      signal: options.signal,
      onOutput,
    };
    const client = this.generation === "v1alpha" ? this.v1alpha : this.v1;
    const outcome = await client.exec(this.id, command, request);
    result.exitCode = outcome.exitCode;
    result.failure = outcome.failed ?? outcome.errorMessage;
    return result;
  }

  /** Step 5: the five file-command files read back, each CopyOut cancelled after its first entry. */
  private async readFileCommands(result: StepResult): Promise<void> {
    const file = (name: string) => `${this.layout.actPath}/workflow/${name}`;
    const copyOutFirstEntry = (path: string) =>
      firstEntryThenCancel((signal) =>
        (this.generation === "v1alpha" ? this.v1alpha : this.v1).copyOut(this.id, path, signal),
      );
    if (this.generation === "v1alpha") {
      Object.assign(this.env, runnerParseEnvFile(await copyOutFirstEntry(file(fileCommands.ENV))));
      runnerParseEnvFile(await copyOutFirstEntry(file(fileCommands.STATE)));
      result.outputs = runnerParseEnvFile(await copyOutFirstEntry(file(fileCommands.OUTPUT)));
    } else {
      const updated = async (name: string, current: Record<string, string>) =>
        (await this.v1.raw.updateEnv({ environmentId: this.id, srcPath: file(name), currentEnv: current }))
          .updatedEnv;
      Object.assign(this.env, await updated(fileCommands.ENV, this.env));
      await updated(fileCommands.STATE, {});
      result.outputs = await updated(fileCommands.OUTPUT, {});
    }
    for (const line of (await copyOutFirstEntry(file(fileCommands.PATH))).split("\n")) {
      if (line) this.extraPath.unshift(line);
    }
    result.summary = await copyOutFirstEntry(file(fileCommands.STEP_SUMMARY));
  }
}
