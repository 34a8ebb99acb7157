import assert from "node:assert/strict";
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { connectionWindowBytes, streamWindowBytes, widenHttp2ReceiveWindows } from "./http2-windows.js";

test("an HTTP/2 server made after widening advertises the wide stream window and opens the connection's", async () => {
  widenHttp2ReceiveWindows();
  widenHttp2ReceiveWindows(); // idempotent: a second call must not wrap twice
  const server = http2.createServer();
  const serverSession = once(server, "session") as Promise<[http2.ServerHttp2Session]>;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    await once(client, "remoteSettings");
    assert.equal(
      client.remoteSettings.initialWindowSize,
      streamWindowBytes,
      "the window the client may fill per stream",
    );
    const [session] = await serverSession;
    // The WINDOW_UPDATE follows the session's start; wait for it to land.
    for (let i = 0; i < 100 && session.state.localWindowSize !== connectionWindowBytes; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(session.state.localWindowSize, connectionWindowBytes, "the connection's receive window");
  } finally {
    client.close();
    server.close();
  }
});
