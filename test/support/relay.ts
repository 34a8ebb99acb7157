import { type Server, type Socket, connect, createServer } from "node:net";

/** Where a relay connects to, or listens on: a TCP port or a unix socket. */
export type RelayEnd = { host: string; port: number } | { path: string };

/**
 * A byte relay between berth and a server it talks to (the Kubernetes API
 * server, the Docker engine): the test can count what crosses it and cut
 * every connection, as a proxy restart or a network failure does.
 */
export class Relay {
  readonly server: Server;
  readonly sockets = new Set<Socket>();
  bytesToServer = 0;

  constructor(target: RelayEnd) {
    this.server = createServer((client) => {
      const upstream = connect(target);
      this.sockets.add(client).add(upstream);
      client.on("data", (chunk: Buffer) => (this.bytesToServer += chunk.length));
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
    });
  }

  /** Listens on a unix socket path, or on a free loopback port (returned). */
  async listen(path?: string): Promise<number | undefined> {
    await new Promise<void>((resolve) =>
      path === undefined ? this.server.listen(0, "127.0.0.1", resolve) : this.server.listen(path, resolve),
    );
    return path === undefined ? (this.server.address() as { port: number }).port : undefined;
  }

  cutAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
