import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { openChannel, pluginClient, type ClientTls, type Generation } from "./client.js";
import { type DaemonConfig, type ServeFlags, defaultListen, loadConfig } from "./config.js";
import { createDaemon, provisionBackend } from "./daemon.js";
import { reconcile } from "./reconciler.js";
import { StateStore } from "./state-store.js";
import { driverNames } from "./drivers.js";
import type { Backend } from "./environments.js";
import { BerthError, messageOf } from "./errors.js";
import { createLogger } from "./logger.js";

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `KEY=VALUE` pairs from repeated flags. */
function keyValues(pairs: string[], flag: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new BerthError(3, `${flag} ${pair}: expected KEY=VALUE`);
    result[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return result;
}

function clientOptions(command: Command): Command {
  return command
    .option("--target <addr>", "berth's address: unix:///path or tcp://host:port", defaultListen)
    .option("--tls-ca <file>", "CA certificate that signed berth's server certificate (TCP)")
    .option("--tls-cert <file>", "client certificate, for mutual TLS")
    .option("--tls-key <file>", "client key, for mutual TLS")
    .addOption(
      new Option("--protocol <generation>", "protocol generation to speak")
        .choices(["v1", "v1alpha"])
        .default("v1alpha"),
    );
}

interface ClientFlags {
  target: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  protocol: Generation;
}

function connectClient(flags: ClientFlags) {
  const tls: ClientTls = { ca: flags.tlsCa, cert: flags.tlsCert, key: flags.tlsKey };
  const channel = openChannel(flags.target, tls);
  return { channel, client: pluginClient(flags.protocol, channel) };
}

const { version } = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

const program = new Command()
  .name("berth")
  .description(
    "Execution-environment backend for CI runners (Forgejo runner plugin protocols plugin.v1 and plugin.v1alpha).",
  )
  .version(`${version} (Node.js ${process.version})`)
  .showHelpAfterError()
  .addHelpText(
    "after",
    `
Examples:
  berth serve                     # serve the host driver on ${defaultListen}
  berth run -- echo hello         # run one command through it`,
  );

/** The flags of `serve` (and `validate`, which loads the same configuration). */
function serveOptions(command: Command): Command {
  return command
    .option("--config <file>", "YAML configuration file (see CONFIG.md); flags win over it")
    .option(
      "--backend <name>",
      `the backend that --listen listeners serve: a backend of the config file, or a driver (${driverNames().join(", ")}); default host`,
    )
    .option(
      "--backend-opt <key=value>",
      "driver option of that backend, as in the driver's config section (repeatable)",
      collect,
      [],
    )
    .option(
      "--listen <addr>",
      `address to serve: unix:///path or tcp://host:port (repeatable; replaces the file's listeners; default ${defaultListen})`,
      collect,
      [],
    )
    .option("--tls-cert <file>", "server certificate for TCP listeners")
    .option("--tls-key <file>", "server key for TCP listeners")
    .option(
      "--tls-client-ca <file>",
      "CA for client certificates: makes them mandatory and verified (mutual TLS)",
    )
    .option("--insecure", "allow plain TCP without TLS (loopback addresses only)")
    .addOption(
      new Option("--log-level <level>", "log level (default info)").choices([
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "fatal",
      ]),
    )
    .option(
      "--shutdown-grace <seconds>",
      "how long in-flight calls may finish on SIGTERM/SIGINT (default 10)",
    )
    .option("--metrics-listen <host:port>", "serve Prometheus metrics, /healthz and /readyz over HTTP here")
    .option("--audit-log <file|stdout|stderr>", "write one JSON audit record per RPC here")
    .option(
      "--state-dir <dir>",
      "where berth records its environments, to take them up after a restart (default ./.berth)",
    )
    .option(
      "--instance <name>",
      "this berth's name on what it creates; berths sharing an engine or namespace need different ones (default berth)",
    );
}

/** The flags as commander gives them: repeated options as lists, numbers as text. */
type RawServeFlags = Omit<ServeFlags, "backendOpt" | "shutdownGrace"> & {
  backendOpt: string[];
  shutdownGrace?: string;
};

function serveFlags(flags: RawServeFlags): ServeFlags {
  const grace = flags.shutdownGrace === undefined ? undefined : Number(flags.shutdownGrace);
  if (grace !== undefined && !(grace >= 0)) {
    throw new BerthError(3, `--shutdown-grace ${flags.shutdownGrace}: expected a number of seconds`);
  }
  return { ...flags, backendOpt: keyValues(flags.backendOpt, "--backend-opt"), shutdownGrace: grace };
}

function loggerFor(config: DaemonConfig) {
  const { level, format } = config.logging;
  return createLogger(level, format === "auto" ? {} : { pretty: format === "pretty" });
}

serveOptions(
  program
    .command("serve")
    .description(
      "Run the daemon: serve both protocol generations on every listener, each listener creating environments on its backend.",
    ),
)
  .addHelpText(
    "after",
    `
Examples:
  berth serve                                    # host driver on ${defaultListen}
  berth serve --config /etc/berth/berth.yaml     # listeners and backends from a file
  berth serve --listen unix:///run/berth/berth.sock --backend host --backend-opt root=/var/lib/berth
  berth serve --listen tcp://0.0.0.0:7443 --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem`,
  )
  .action(async (rawFlags: RawServeFlags) => {
    const flags = serveFlags(rawFlags);
    const config = loadConfig(flags);
    const logger = loggerFor(config);
    const daemon = createDaemon({ config, logger });
    await daemon.start();
    // SIGHUP: read the configuration again; a bad one leaves the running one as it is.
    let reloading = Promise.resolve();
    const reload = () => {
      reloading = reloading.then(async () => {
        logger.info("SIGHUP: reloading the configuration");
        try {
          await daemon.reload(loadConfig(flags));
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
  });

serveOptions(
  program
    .command("validate")
    .description(
      "Check a configuration as serve would load it, and provision every backend (connect, check permissions), without listening. Exits non-zero with every problem found.",
    ),
)
  .addHelpText(
    "after",
    `
Examples:
  berth validate --config /etc/berth/berth.yaml
  berth validate --offline --config berth.yaml   # the file only, no connections
  berth validate --backend kubernetes --backend-opt kubeconfig=/etc/berth/kubeconfig`,
  )
  .option("--offline", "check the file only: do not read TLS files or connect to the backends")
  .action(async (rawFlags: RawServeFlags & { offline?: boolean }) => {
    const config = loadConfig(serveFlags(rawFlags), { checkFiles: !rawFlags.offline });
    const logger = createLogger("warn");
    for (const backendConfig of rawFlags.offline ? [] : config.backends) {
      let backend: Backend | undefined;
      try {
        await provisionBackend(
          backendConfig,
          { logger, instance: config.instance },
          (made) => (backend = made),
        );
      } finally {
        await backend?.driver.cleanup();
      }
    }
    process.stdout.write(
      `configuration ${rawFlags.config ?? "(flags only)"} is valid: ${config.listeners
        .map((listener) => `${listener.address} → backend ${listener.backend}`)
        .join(
          ", ",
        )}; backends ${rawFlags.offline ? "(not contacted)" : "provisioned"}: ${config.backends.map((b) => `${b.name} (${b.driver})`).join(", ")}\n`,
    );
  });

serveOptions(
  program
    .command("gc")
    .description(
      "Run the reconciler once by hand: remove what the backends hold for this berth instance that no record of the state directory accounts for (older than reconciler.orphanGraceSeconds), and environments older than reconciler.maxAgeSeconds. Prints each one.",
    ),
)
  .option("--dry-run", "only print what would be removed")
  .addHelpText(
    "after",
    `
Examples:
  berth gc --config /etc/berth/berth.yaml --dry-run
  berth gc --backend docker`,
  )
  .action(async (rawFlags: RawServeFlags & { dryRun?: boolean }) => {
    const config = loadConfig(serveFlags(rawFlags));
    const logger = createLogger(config.logging.level === "info" ? "warn" : config.logging.level);
    const backends: Backend[] = [];
    try {
      for (const backendConfig of config.backends) {
        await provisionBackend(backendConfig, { logger, instance: config.instance }, (made) =>
          backends.push(made),
        );
      }
      const recorded = new Set(
        (await new StateStore(config.stateDir, logger).load()).map((record) => record.id),
      );
      const removals = await reconcile({
        backends,
        isLive: (id) => recorded.has(id),
        // A recorded environment's record is the daemon's to drop; here its resources go.
        removeLive: (found, backend) => backend.driver.remove({ id: found.id, state: found.state }),
        orphanGraceMs: config.reconciler.orphanGraceMs,
        maxAgeMs: config.reconciler.maxAgeMs,
        dryRun: rawFlags.dryRun ?? false,
        logger,
      });
      for (const removal of removals) {
        const verb = rawFlags.dryRun ? "would remove" : removal.error ? "could not remove" : "removed";
        process.stdout.write(
          `${verb} ${removal.id} (backend ${removal.backend}, ${removal.reason === "orphan" ? "no record" : "older than reconciler.maxAgeSeconds"}, created ${removal.createdAt?.toISOString() ?? "at an unknown time"})${removal.error ? `: ${removal.error}` : ""}\n`,
        );
      }
      if (removals.length === 0) process.stdout.write("nothing to remove\n");
      if (removals.some((removal) => removal.error)) process.exitCode = 1;
    } finally {
      for (const backend of backends) await backend.driver.cleanup();
    }
  });

clientOptions(
  program
    .command("caps")
    .description("Ask a berth (or any plugin server) what it can do, and print the answer as JSON.")
    .addHelpText("after", "\nExample:\n  berth caps --target unix://./berth.sock --protocol v1"),
).action(async (flags: ClientFlags) => {
  const { channel, client } = connectClient(flags);
  try {
    const caps = await client.capabilities();
    process.stdout.write(`${JSON.stringify(caps, null, 2)}\n`);
  } finally {
    channel.close();
  }
});

clientOptions(
  program
    .command("run")
    .description(
      "Run one command in a fresh environment: create, start, exec (output streamed live), and always remove. Exits with the command's exit code.",
    )
    .option("--image <image>", "image for the environment (ignored by the host driver)", "")
    .option("--opt <key=value>", "backend_options entry (repeatable)", collect, [])
    .option("--workdir <dir>", "working directory for the command")
    .option("-e, --env <key=value>", "environment variable for the command (repeatable)", collect, [])
    .argument("<command...>", "the program and its arguments")
    .addHelpText(
      "after",
      "\nExamples:\n  berth run -- echo hello\n  berth run --target unix:///run/berth/docker.sock --image alpine -- sh -c 'uname -a'",
    ),
).action(
  async (
    command: string[],
    flags: ClientFlags & { image: string; opt: string[]; workdir?: string; env: string[] },
  ) => {
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
      if (cancel.signal.aborted) {
        process.stderr.write("berth: cancelled\n");
        process.exitCode = 130;
      } else throw err;
    } finally {
      if (id !== undefined) await client.remove(id);
      channel.close();
      process.removeListener("SIGINT", onSignal);
      process.removeListener("SIGTERM", onSignal);
    }
  },
);

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`berth: ${messageOf(err)}\n`);
  process.exitCode = err instanceof BerthError ? 2 : 1;
});
