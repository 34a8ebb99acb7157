import assert from "node:assert/strict";
import { test } from "node:test";
import { CallerRateLimit } from "./rate-limit.js";

test("each caller gets its rate, with a burst of twice it, and callers do not share a bucket", () => {
  let now = 0;
  const limit = new CallerRateLimit(10, () => now);
  const taken = (caller: string, times: number) =>
    Array.from({ length: times }, () => limit.take(caller)).filter(Boolean).length;
  assert.equal(taken("a", 50), 20, "the burst is twice the rate");
  assert.equal(taken("b", 5), 5, "another caller has its own bucket");
  now += 500;
  assert.equal(taken("a", 50), 5, "half a second later: half the rate");
  now += 60_000;
  assert.equal(taken("a", 50), 20, "a quiet caller is back to a full burst");
  assert.equal(new CallerRateLimit(0, () => now).take("x"), true, "0 means no limit");
});
