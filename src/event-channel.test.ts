import assert from "node:assert/strict";
import { test } from "node:test";
import { EventChannel } from "./event-channel.js";

test("a consumer that stops at an item releases that item's producer, and those queued after it", async () => {
  const channel = new EventChannel<number>();
  const taken: number[] = [];
  for (const n of [1, 2, 3]) channel.push(n, () => taken.push(n));
  for await (const item of channel) {
    assert.equal(item, 1);
    // The consumer goes away (a cancelled call) while holding item 1.
    break;
  }
  channel.abandon();
  assert.deepEqual(taken.sort(), [1, 2, 3], "no producer waits for good");
});
