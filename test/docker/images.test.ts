import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  dockerCli,
  dockerSkipMessage,
  dockerTestOptions,
  dockerTestOptionsFor,
  ensureTestImages,
  testImages,
} from "../support/docker-images.js";

const docker = await dockerTestOptions();

test("Docker tests skip without an engine, and fail instead when BERTH_REQUIRE_DOCKER=1", () => {
  assert.deepEqual(dockerTestOptionsFor(undefined, { BERTH_REQUIRE_DOCKER: "1" }), { skip: false });
  assert.deepEqual(dockerTestOptionsFor("connect ENOENT", {}), { skip: dockerSkipMessage });
  assert.deepEqual(dockerTestOptionsFor("connect ENOENT", { BERTH_REQUIRE_DOCKER: "0" }), {
    skip: dockerSkipMessage,
  });
  assert.throws(
    () => dockerTestOptionsFor("connect ENOENT", { BERTH_REQUIRE_DOCKER: "1" }),
    /no Docker engine answers \(connect ENOENT\)/,
  );
});

describe("test images", docker, () => {
  test("are built when missing, labelled, and run", { timeout: 300_000 }, async () => {
    await Promise.all([ensureTestImages(), ensureTestImages()]);
    for (const image of Object.values(testImages)) {
      const { stdout } = await dockerCli([
        "image",
        "inspect",
        "--format",
        '{{index .Config.Labels "berth.test"}}',
        image,
      ]);
      assert.equal(stdout.trim(), "1", image);
    }
    const { stdout } = await dockerCli([
      "run",
      "--rm",
      "--network",
      "none",
      testImages.busybox,
      "sh",
      "-c",
      "echo ok; id -u nobody",
    ]);
    assert.equal(stdout, "ok\n65534\n");
  });
});
