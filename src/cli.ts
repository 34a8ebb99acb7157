/**
 * The `berth` command line: flags, help and examples. What a command does
 * is in commands.ts, loaded only when one runs, so `--version` and
 * `--help` load no driver, no gRPC and no configuration code.
 */
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { builtInDrivers } from "./builtin-drivers.js";
import type { ClientFlags, RawServeFlags } from "./commands.js";
import { DriverRegistry } from "./drivers.js";
import { defaultListen } from "./listen-address.js";

const drivers = new DriverRegistry(builtInDrivers);
const commands = () => import("./commands.js");

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
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
      `the backend that --listen listeners serve: a backend of the config file, or a driver (${drivers.names().join(", ")}); default host`,
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
  .action(async (rawFlags: RawServeFlags) => (await commands()).serve(rawFlags, drivers));

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
  .action(async (rawFlags: RawServeFlags & { offline?: boolean }) =>
    (await commands()).validate(rawFlags, drivers),
  );

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
  .action(async (rawFlags: RawServeFlags & { dryRun?: boolean }) => (await commands()).gc(rawFlags, drivers));

clientOptions(
  program
    .command("caps")
    .description("Ask a berth (or any plugin server) what it can do, and print the answer as JSON.")
    .addHelpText("after", "\nExample:\n  berth caps --target unix://./berth.sock --protocol v1"),
).action(async (flags: ClientFlags) => (await commands()).caps(flags));

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
  ) => (await commands()).run(command, flags),
);

program.parseAsync().catch(async (err: unknown) => {
  const { BerthError, messageOf } = await import("./errors.js");
  process.stderr.write(`berth: ${messageOf(err)}\n`);
  process.exitCode = err instanceof BerthError ? 2 : 1;
});
