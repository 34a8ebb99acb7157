import { readdir, readFile } from "node:fs/promises";

/**
 * Signals a command's whole process tree: its process group, every
 * descendant found through /proc (children that started a group or session
 * of their own), and every process carrying the marker variable in its
 * environment (which also finds double-forked daemons that left the tree).
 */
export async function signalProcessTree(
  pid: number | undefined,
  marker: { name: string; value: string },
  signal: NodeJS.Signals,
): Promise<void> {
  const processes = await listProcesses();
  const targets = new Set<number>(await markedProcesses(processes, marker));
  if (pid !== undefined) {
    targets.add(pid);
    for (const descendant of descendantsOf(processes, pid)) targets.add(descendant);
    try {
      process.kill(-pid, signal);
    } catch {
      // The group is already gone.
    }
  }
  for (const target of targets) {
    try {
      process.kill(target, signal);
    } catch {
      // Already exited.
    }
  }
}

interface ProcessEntry {
  pid: number;
  ppid: number;
}

async function listProcesses(): Promise<ProcessEntry[]> {
  const entries: ProcessEntry[] = [];
  for (const name of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    // Fields after the parenthesised command name: state, ppid, …
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (Number.isFinite(ppid)) entries.push({ pid: Number(name), ppid });
  }
  return entries;
}

function descendantsOf(processes: ProcessEntry[], root: number): number[] {
  const childrenOf = new Map<number, number[]>();
  for (const { pid, ppid } of processes) childrenOf.set(ppid, [...(childrenOf.get(ppid) ?? []), pid]);
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

async function markedProcesses(
  processes: ProcessEntry[],
  marker: { name: string; value: string },
): Promise<number[]> {
  const needle = `${marker.name}=${marker.value}`;
  const marked: number[] = [];
  for (const { pid } of processes) {
    const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
    if (environ.split("\0").includes(needle)) marked.push(pid);
  }
  return marked;
}
