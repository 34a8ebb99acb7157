import http2 from "node:http2";

/**
 * HTTP/2 receive windows of berth's gRPC listeners. Node's default is
 * 64 KiB per stream and per connection, which grpc-js keeps and offers no
 * option for: a client streaming a CopyIn may send only 64 KiB before it
 * waits for the daemon's next WINDOW_UPDATE, a round trip through the event
 * loop per 64 KiB. With a Go client (the runner's grpc-go) over a unix
 * socket that held a bare grpc-js server to 390 MB/s of CopyIn; with these
 * windows it took 850 MB/s (bench/ceiling-server.ts, 512 MiB, this 2-core
 * machine). The windows are also what bounds memory on the way in: a
 * client has at most this much in flight, and a CopyIn whose backend is
 * slow holds the client back once its stream's window is used up.
 */
export const streamWindowBytes = 1024 * 1024;
export const connectionWindowBytes = 4 * 1024 * 1024;

let installed = false;

/**
 * Makes every HTTP/2 server this process creates from now on advertise the
 * windows above. grpc-js creates its servers inside `listen()` with
 * `http2.createServer` / `createSecureServer` and exposes neither their
 * settings nor their sessions, so the two factories are wrapped; idempotent.
 */
export function widenHttp2ReceiveWindows(): void {
  if (installed) return;
  installed = true;
  const createServer = http2.createServer.bind(http2);
  const createSecureServer = http2.createSecureServer.bind(http2);
  const widened = <O extends http2.ServerOptions>(options: O | undefined): O =>
    ({ ...options, settings: { ...options?.settings, initialWindowSize: streamWindowBytes } }) as O;
  const widenSessions = <S extends http2.Http2Server | http2.Http2SecureServer>(server: S): S => {
    server.on("session", (session: http2.ServerHttp2Session) => {
      // The connection's window is not a setting: it grows by a WINDOW_UPDATE, sent once the session is up.
      session.once("connect", () => {
        if (!session.destroyed) session.setLocalWindowSize(connectionWindowBytes);
      });
    });
    return server;
  };
  Object.assign(http2, {
    createServer: (options?: http2.ServerOptions, listener?: never) =>
      widenSessions(createServer(widened(options), listener)),
    createSecureServer: (options?: http2.SecureServerOptions, listener?: never) =>
      widenSessions(createSecureServer(widened(options), listener)),
  });
}
