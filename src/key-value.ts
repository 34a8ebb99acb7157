/** `KEY=VALUE` split at the first "=", or undefined when there is no name before it. */
export function splitKeyValue(entry: string): [string, string] | undefined {
  const eq = entry.indexOf("=");
  return eq > 0 ? [entry.slice(0, eq), entry.slice(eq + 1)] : undefined;
}

/**
 * `KEY=VALUE` entries as a map (a later key wins); an entry without a name
 * before "=" goes to `onInvalid` (which may throw), else it is skipped.
 */
export function keyValueMap(
  entries: Iterable<string>,
  onInvalid: (entry: string, index: number) => void = () => {},
): Record<string, string> {
  const map: Record<string, string> = {};
  let index = 0;
  for (const entry of entries) {
    const pair = splitKeyValue(entry);
    if (pair) map[pair[0]] = pair[1];
    else onInvalid(entry, index);
    index++;
  }
  return map;
}

/** A map as `KEY=VALUE` entries, as process environments and container APIs take them. */
export function keyValueEntries(map: Record<string, string>): string[] {
  return Object.entries(map).map(([key, value]) => `${key}=${value}`);
}
