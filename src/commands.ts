/**
 * What each `berth` command does. The CLI (cli.ts) loads this module only
 * when a command runs, so `--version` and `--help` load none of it.
 */
import { type ClientTls, type Generation, openChannel, pluginClient } from "./client.js";
import { type DaemonConfig, type ServeFlags, loadConfig } from "./config.js";
import { createDaemon, provisionBackend } from "./daemon.js";
import type { DriverRegistry } from "./drivers.js";
import type { Backend } from "./environments.js";
import { BerthError, Status, messageOf } from "./errors.js";
import { keyValueMap } from "./key-value.js";
import { createLogger } from "./logger.js";
import { reconcile } from "./reconciler.js";
import { StateStore } from "./state-store.js";

/** The flags of `serve` as commander gives them: repeated options as lists, numbers as text. */
export type RawServeFlags = Omit<ServeFlags, "backendOpt" | "shutdownGrace"> & {
  backendOpt: string[];
  shutdownGrace?: string;
};

export interface ClientFlags {
  target: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  protocol: Generation;
}

/** `KEY=VALUE` pairs from repeated flags. */
function keyValues(pairs: string[], flag: string): Record<string, string> {
  return keyValueMap(pairs, (pair) => {
    throw new BerthError(Status.INVALID_ARGUMENT, `${flag} ${pair}: expected KEY=VALUE`);
  });
}

function serveFlags(flags: RawServeFlags): ServeFlags {
  const grace = flags.shutdownGrace === undefined ? undefined : Number(flags.shutdownGrace);
  if (grace !== undefined && !(grace >= 0)) {
    throw new BerthError(
      Status.INVALID_ARGUMENT,
      `--shutdown-grace ${flags.shutdownGrace}: expected a number of seconds`,
    );
  }
  return { ...flags, backendOpt: keyValues(flags.backendOpt, "--backend-opt"), shutdownGrace: grace };
}

function loggerFor(config: DaemonConfig) {
  const { level, format } = config.logging;
  return createLogger(level, format === "auto" ? {} : { pretty: format === "pretty" });
}

/** `berth serve`: runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the configuration. */
export async function serve(rawFlags: RawServeFlags, drivers: DriverRegistry): Promise<void> {
  const flags = serveFlags(rawFlags);
  const config = await loadConfig(flags, drivers);
  const logger = loggerFor(config);
  const daemon = createDaemon({ config, logger, drivers });
  await daemon.start();
  // SIGHUP: read the configuration again; a bad one leaves the running one as it is.
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(async () => {
      logger.info("SIGHUP: reloading the configuration");
      try {
        await daemon.reload(await loadConfig(flags, drivers));
      } catch (err) {
        logger.error(
          { err: messageOf(err) },
          "the new configuration was not applied; berth goes on with the one it has",
        );
      }
    });
  };
  process.on("SIGHUP", reload);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const shutdown = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, "second signal: cancelling in-flight calls now");
        daemon.cancelInFlight();
        return;
      }
      stopping = true;
      logger.info({ signal }, "shutting down: no new calls, in-flight calls may finish");
      daemon.stop().then(resolve, (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exitCode = 1;
        resolve();
      });
    };
    process.on("SIGINT", shutdown);
    process.on("SIGTERM", shutdown);
  });
  process.removeListener("SIGHUP", reload);
  logger.info("stopped");
  // Nothing should be left to keep the process alive now; if something is, say what (a bug in berth).
  setTimeout(() => {
    logger.error(
      { resources: process.getActiveResourcesInfo() },
      "berth stopped, but these handles still keep the process from exiting (a bug in berth)",
    );
  }, 5000).unref();
}

/** Provisions every backend of the configuration, runs fn with them, and always cleans them up. */
async function withBackends<T>(
  config: DaemonConfig,
  drivers: DriverRegistry,
  logger: ReturnType<typeof createLogger>,
  fn: (backends: Backend[]) => Promise<T>,
): Promise<T> {
  const backends: Backend[] = [];
  try {
    for (const backendConfig of config.backends) {
      await provisionBackend(
        backendConfig,
        { logger, instance: config.instance, drivers, serving: false },
        (made) => backends.push(made),
      );
    }
    return await fn(backends);
  } finally {
    for (const backend of backends) await backend.driver.cleanup();
  }
}

/** `berth validate`: loads the configuration as serve would and provisions every backend, without listening. */
export async function validate(
  rawFlags: RawServeFlags & { offline?: boolean },
  drivers: DriverRegistry,
): Promise<void> {
  const offline = rawFlags.offline ?? false;
  const config = await loadConfig(serveFlags(rawFlags), drivers, { checkFiles: !offline });
  if (!offline) await withBackends(config, drivers, createLogger("warn"), async () => {});
  const listeners = config.listeners.map((listener) => `${listener.address} → backend ${listener.backend}`);
  const backends = config.backends.map((b) => `${b.name} (${b.driver})`);
  process.stdout.write(
    `configuration ${rawFlags.config ?? "(flags only)"} is valid: ${listeners.join(", ")}; backends ${offline ? "(not contacted)" : "provisioned"}: ${backends.join(", ")}\n`,
  );
}

/** `berth gc`: one reconciler pass by hand, printing what it removes (or would). */
export async function gc(
  rawFlags: RawServeFlags & { dryRun?: boolean },
  drivers: DriverRegistry,
): Promise<void> {
  const config = await loadConfig(serveFlags(rawFlags), drivers);
  const dryRun = rawFlags.dryRun ?? false;
  const logger = createLogger(config.logging.level === "info" ? "warn" : config.logging.level);
  const removals = await withBackends(config, drivers, logger, async (backends) => {
    const recorded = new Set(
      (await new StateStore(config.stateDir, logger).load()).map((record) => record.id),
    );
    return reconcile({
      backends,
      isLive: (id) => recorded.has(id),
      // A recorded environment's record is the daemon's to drop; here its resources go.
      removeLive: (found, backend) => backend.driver.remove({ id: found.id, state: found.state }),
      orphanGraceMs: config.reconciler.orphanGraceMs,
      maxAgeMs: config.reconciler.maxAgeMs,
      dryRun,
      logger,
    });
  });
  for (const removal of removals) {
    const verb = dryRun ? "would remove" : removal.error ? "could not remove" : "removed";
    const reason = removal.reason === "orphan" ? "no record" : "older than reconciler.maxAgeSeconds";
    const created = removal.createdAt?.toISOString() ?? "at an unknown time";
    process.stdout.write(
      `${verb} ${removal.id} (backend ${removal.backend}, ${reason}, created ${created})${removal.error ? `: ${removal.error}` : ""}\n`,
    );
  }
  if (removals.length === 0) process.stdout.write("nothing to remove\n");
  if (removals.some((removal) => removal.error)) process.exitCode = 1;
}

function connectClient(flags: ClientFlags) {
  const tls: ClientTls = { ca: flags.tlsCa, cert: flags.tlsCert, key: flags.tlsKey };
  const channel = openChannel(flags.target, tls);
  return { channel, client: pluginClient(flags.protocol, channel) };
}

/** `berth caps`: the Capabilities answer as JSON. */
export async function caps(flags: ClientFlags): Promise<void> {
  const { channel, client } = connectClient(flags);
  try {
    process.stdout.write(`${JSON.stringify(await client.capabilities(), null, 2)}\n`);
  } finally {
    channel.close();
  }
}

/** `berth run`: create, start, exec with live output, and always remove; exits with the command's code. */
export async function run(
  command: string[],
  flags: ClientFlags & { image: string; opt: string[]; workdir?: string; env: string[] },
): Promise<void> {
  const { channel, client } = connectClient(flags);
  const cancel = new AbortController();
  const onSignal = () => cancel.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let id: string | undefined;
  try {
    ({ id } = await client.create({ image: flags.image, backendOptions: keyValues(flags.opt, "--opt") }));
    await client.start(id, (line) => process.stderr.write(`berth: ${line}\n`));
    const outcome = await client.exec(id, command, {
      env: keyValues(flags.env, "--env"),
      workdir: flags.workdir,
      signal: cancel.signal,
      onOutput: (stream, data) => (stream === "stdout" ? process.stdout : process.stderr).write(data),
    });
    if (outcome.failed !== undefined || outcome.errorMessage) {
      process.stderr.write(`berth: ${outcome.failed ?? outcome.errorMessage}\n`);
    }
    process.exitCode = outcome.failed !== undefined ? 127 : (outcome.exitCode ?? 1);
  } catch (err) {
    if (!cancel.signal.aborted) throw err;
    process.stderr.write("berth: cancelled\n");
    process.exitCode = 130;
  } finally {
    if (id !== undefined) await client.remove(id);
    channel.close();
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}
