import { readdir, readFile } from "node:fs/promises";

/**
 * Signals a command's whole process tree: its process group, and every
 * descendant found through /proc (which catches children that started a
 * group or session of their own). Processes that both left the group and were
 * re-parented away (double-forked daemons) are out of reach: the README says so.
 */
export async function signalProcessTree(pid: number, signal: NodeJS.Signals): Promise<void> {
  const targets = new Set<number>([pid, ...(await descendantsOf(pid))]);
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
  for (const target of targets) {
    try {
      process.kill(target, signal);
    } catch {
      // Already exited.
    }
  }
}

async function descendantsOf(root: number): Promise<number[]> {
  const childrenOf = new Map<number, number[]>();
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // Fields after the parenthesised command name: state, ppid, …
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (!Number.isFinite(ppid)) continue;
    const siblings = childrenOf.get(ppid) ?? [];
    siblings.push(Number(entry));
    childrenOf.set(ppid, siblings);
  }
  const found: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    for (const child of childrenOf.get(pending.pop()!) ?? []) {
      found.push(child);
      pending.push(child);
    }
  }
  return found;
}
