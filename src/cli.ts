import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { openChannel, pluginClient, type ClientTls, type Generation } from "./client.js";
import { createDaemon, type DaemonConfig } from "./daemon.js";
import { driverNames } from "./drivers.js";
import { BerthError, messageOf } from "./errors.js";
import { createLogger, type LogLevel } from "./logger.js";

const defaultListen = "unix://./berth.sock";

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

program
  .command("serve")
  .description(
    "Run the daemon: serve both protocol generations on every listener and route jobs to one driver.",
  )
  .option("--backend <driver>", `driver to run jobs with (${driverNames().join(", ")})`, "host")
  .option(
    "--backend-opt <key=value>",
    "driver option, as in the driver's config section (repeatable)",
    collect,
    [],
  )
  .option(
    "--listen <addr>",
    `address to serve: unix:///path or tcp://host:port (repeatable; default ${defaultListen})`,
    collect,
    [],
  )
  .option("--tls-cert <file>", "server certificate for TCP listeners")
  .option("--tls-key <file>", "server key for TCP listeners")
  .option(
    "--tls-client-ca <file>",
    "CA for client certificates: makes them mandatory and verified (mutual TLS)",
  )
  .option("--insecure", "allow plain TCP without TLS (loopback addresses only)", false)
  .addOption(
    new Option("--log-level <level>", "log level")
      .choices(["trace", "debug", "info", "warn", "error", "fatal"])
      .default("info"),
  )
  .option("--shutdown-grace <seconds>", "how long in-flight calls may finish on SIGTERM/SIGINT", "10")
  .addHelpText(
    "after",
    `
Examples:
  berth serve                                    # host driver on ${defaultListen}
  berth serve --listen unix:///run/berth/berth.sock --backend host --backend-opt root=/var/lib/berth
  berth serve --listen tcp://0.0.0.0:7443 --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem`,
  )
  .action(
    async (flags: {
      backend: string;
      backendOpt: string[];
      listen: string[];
      tlsCert?: string;
      tlsKey?: string;
      tlsClientCa?: string;
      insecure: boolean;
      logLevel: LogLevel;
      shutdownGrace: string;
    }) => {
      const logger = createLogger(flags.logLevel);
      const tls =
        flags.tlsCert && flags.tlsKey
          ? { cert: flags.tlsCert, key: flags.tlsKey, clientCa: flags.tlsClientCa }
          : undefined;
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
        throw new BerthError(3, "--tls-cert and --tls-key go together");
      }
      const config: DaemonConfig = {
        backend: {
          name: flags.backend,
          driver: flags.backend,
          options: keyValues(flags.backendOpt, "--backend-opt"),
        },
        listeners: (flags.listen.length > 0 ? flags.listen : [defaultListen]).map((address) => ({
          address,
          tls,
          insecure: flags.insecure,
        })),
        shutdownGraceMs: Number(flags.shutdownGrace) * 1000,
      };
      const daemon = createDaemon({ config, logger });
      await daemon.start();
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
      logger.info("stopped");
    },
  );

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
