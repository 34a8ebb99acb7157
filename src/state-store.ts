/**
 * The environments berth has created, on disk, so a restarted berth can take
 * them up again: one JSON file in the state directory, replaced atomically on
 * every change (write a temporary file, fsync it, rename it over the old one,
 * fsync the directory), so a crash at any instant leaves either the old or
 * the new file, whole. A file that cannot be read is moved aside, and berth
 * starts with no records.
 */
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { type Layout, type SavedState, layoutSchema } from "./driver.js";
import { failedPrecondition, messageOf } from "./errors.js";

/** One environment as the store keeps it. */
export interface EnvironmentRecord {
  id: string;
  /** Name of the backend that created it. */
  backend: string;
  /** The driver's own state for it (container ids, pod name, paths): plain JSON, checked against its SavedState when read back. */
  state: unknown;
  /** The version of the driver's SavedState format it was written in; absent in records from before versions: 1. */
  stateVersion?: number;
  /** ISO time of creation. */
  createdAt: string;
  /** ISO time its environment_timeout ends, if the runner set one. */
  deadline?: string;
  /** Its layout (records of berths before 0.2 have none). */
  layout?: Layout;
  /** Where commands run when an Exec names no workdir. */
  workdir?: string;
}

const fileSchema = z
  .object({
    version: z.literal(1),
    environments: z.array(
      z
        .object({
          id: z.string().regex(/^berth-[0-9a-f]{16}$/),
          backend: z.string().min(1),
          state: z.unknown(),
          stateVersion: z.number().int().positive().optional(),
          createdAt: z.iso.datetime(),
          deadline: z.iso.datetime().optional(),
          layout: layoutSchema.optional(),
          workdir: z.string().optional(),
        })
        .strict(),
    ),
  })
  .strict();

export const stateFileName = "environments.json";

export class StateStore {
  private readonly file: string;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.file = join(dir, stateFileName);
  }

  /**
   * The records of the last run; a missing file is none, and a file that is
   * not whole or not valid is moved aside (logged) and counts as none.
   */
  async load(): Promise<EnvironmentRecord[]> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw failedPrecondition(`cannot create the state directory ${this.dir}: ${messageOf(err)}`);
    }
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw failedPrecondition(`cannot read the state file ${this.file}: ${messageOf(err)}`);
    }
    let problem: string;
    try {
      const parsed = fileSchema.safeParse(JSON.parse(text));
      if (parsed.success) return parsed.data.environments;
      problem = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
    } catch (err) {
      problem = messageOf(err);
    }
    const aside = `${this.file}.corrupt-${new Date().toISOString().replaceAll(":", "-")}`;
    await rename(this.file, aside);
    this.logger.error(
      { file: this.file, movedTo: aside, problem },
      "the state file is damaged: moved aside; berth starts without records, and the reconciler will treat the environments it finds as orphans",
    );
    return [];
  }

  /** Replaces the file with these records; writes happen one after another, in call order. */
  save(records: EnvironmentRecord[]): Promise<void> {
    const text = `${JSON.stringify({ version: 1, environments: records }, null, 1)}\n`;
    const written = this.writing.then(() => this.replace(text));
    this.writing = written.catch((err: unknown) =>
      this.logger.error({ err: messageOf(err), file: this.file }, "cannot write the state file"),
    );
    return written;
  }

  private async replace(text: string): Promise<void> {
    const temporary = `${this.file}.tmp-${process.pid}`;
    const handle = await open(temporary, "w", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.file);
    // The rename itself is durable only once the directory is synced.
    const dir = await open(this.dir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/**
 * A record's driver state checked against its driver's format: the typed
 * state, or what is wrong with it (a record this berth cannot read is
 * forgotten, and its environment's resources become an orphan).
 */
export function readSavedState(
  format: SavedState<unknown>,
  record: EnvironmentRecord,
): { state: unknown } | { problem: string } {
  const version = record.stateVersion ?? 1;
  if (version > format.version) {
    return {
      problem: `its driver state is in format ${version}, newer than this berth's ${format.version} (was berth downgraded?)`,
    };
  }
  const parsed = format.schema.safeParse(record.state);
  if (parsed.success) return { state: parsed.data };
  const issues = parsed.error.issues.map((issue) => `${issue.path.join(".") || "state"}: ${issue.message}`);
  return { problem: `its driver state does not match format ${format.version}: ${issues.join("; ")}` };
}
