import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import type { Logger } from "pino";
import { BerthError, Status, failedPrecondition } from "../../src/errors.js";
import { dockerError, engineMessage, isNotFound } from "./errors.js";
import type { JobOptions } from "./job-options.js";

/** The engine's images as jobs need them: looked up, or pulled as the pull policy says. */
export class EngineImages {
  constructor(
    private readonly docker: Docker,
    private readonly logger: Logger,
    /** The Docker config file with registry credentials (option dockerConfig); unset: the usual one. */
    private readonly dockerConfig: string | undefined,
  ) {}

  /** Pulls the image as the policy says and returns its inspect data. */
  async ensure(
    image: string,
    policy: JobOptions["pullPolicy"] & string,
    platform: string,
  ): Promise<Docker.ImageInspectInfo> {
    const reference = withDefaultTag(image);
    const inspect = () => this.docker.getImage(reference).inspect();
    if (policy !== "always") {
      try {
        return await inspect();
      } catch (err) {
        if (!isNotFound(err)) throw dockerError(err, `inspect image ${reference}`);
        if (policy === "never") {
          throw failedPrecondition(`image ${reference} is not on the Docker engine and pull_policy is never`);
        }
      }
    }
    await this.pull(reference, platform);
    return inspect().catch((err: unknown) => {
      throw dockerError(err, `inspect image ${reference}`);
    });
  }

  private async pull(reference: string, platform: string): Promise<void> {
    const log = this.logger.child({ image: reference });
    log.info("pulling image");
    const authconfig = await registryAuth(reference, this.dockerConfig);
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.pull(reference, { platform: platform || undefined, authconfig });
    } catch (err) {
      throw new BerthError(
        isNotFound(err) ? Status.NOT_FOUND : Status.FAILED_PRECONDITION,
        `cannot pull image ${reference}: ${engineMessage(err)}`,
        { cause: err },
      );
    }
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null, events: { error?: string }[]) => {
          const failure = err?.message ?? events.find((e) => e.error)?.error;
          if (failure)
            reject(new BerthError(Status.FAILED_PRECONDITION, `cannot pull image ${reference}: ${failure}`));
          else resolve();
        },
        (event: { status?: string; id?: string; progress?: string }) =>
          log.debug({ layer: event.id, status: event.status, progress: event.progress }, "pull progress"),
      );
    });
    log.info("pulled image");
  }
}

/** `busybox` means `busybox:latest`; without a tag the engine would pull every tag. */
export function withDefaultTag(image: string): string {
  const lastComponent = image.slice(image.lastIndexOf("/") + 1);
  return lastComponent.includes(":") || lastComponent.includes("@") ? image : `${image}:latest`;
}

/** Credentials for the image's registry from the Docker config file's `auths`, if any. */
export async function registryAuth(reference: string, configPath?: string): Promise<object | undefined> {
  const file = configPath ?? join(process.env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(await readFile(file, "utf8")) as typeof config;
  } catch {
    return undefined;
  }
  const first = reference.split("/")[0];
  const registry =
    reference.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")
      ? first
      : "docker.io";
  const candidates =
    registry === "docker.io"
      ? ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
      : [registry, `https://${registry}`];
  const entry = candidates.map((key) => config.auths?.[key]).find(Boolean);
  if (!entry) return undefined;
  const [username, password] = entry.auth
    ? Buffer.from(entry.auth, "base64").toString().split(/:(.*)/s)
    : [entry.username, entry.password];
  return { username, password, serveraddress: registry };
}
