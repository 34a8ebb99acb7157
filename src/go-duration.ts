/**
 * Go's time.Duration text, as the plugin.v1 runner puts its job timeout in
 * backend_options (`2h59m59.9s`, `90m`, `1.5h`, `300ms`, `0s`, `-5m`).
 */
const unitMs: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Milliseconds of a Go duration string, or undefined if it is not one. */
export function parseGoDuration(text: string): number | undefined {
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(text);
  if (text === "0") return 0;
  if (!match) return undefined;
  let total = 0;
  for (const [, amount, unit] of text
    .slice(match[1].length)
    .matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(amount) * unitMs[unit];
  }
  return match[1] === "-" ? -total : total;
}
