import assert from "node:assert/strict";
import { test } from "node:test";
import { parseGoDuration } from "./go-duration.js";

test("Go durations as the plugin.v1 runner writes its job timeout", () => {
  const cases: [string, number | undefined][] = [
    ["2h59m59.9s", 10_799_900],
    ["3h0m0s", 10_800_000],
    ["90m", 5_400_000],
    ["1.5h", 5_400_000],
    ["300ms", 300],
    ["1m30s250ms", 90_250],
    ["1500us", 1.5],
    ["0s", 0],
    ["0", 0],
    ["-5m", -300_000],
    ["", undefined],
    ["5", undefined],
    ["1d", undefined],
    ["h", undefined],
    ["1h ", undefined],
    ["--1s", undefined],
  ];
  for (const [text, ms] of cases) assert.equal(parseGoDuration(text), ms, text);
});
