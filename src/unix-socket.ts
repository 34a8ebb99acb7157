import { lstat, mkdir, unlink, chmod } from "node:fs/promises";
import { connect } from "node:net";
import { dirname } from "node:path";
import { failedPrecondition, messageOf } from "./errors.js";

/**
 * Makes the socket path free to bind: a stale socket (nothing answers) is
 * removed; anything else there — a live socket, a regular file, a directory,
 * a symlink — stops startup untouched.
 */
export async function claimSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o750 });
  let stat;
  try {
    stat = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw failedPrecondition(`cannot check socket path ${path}: ${messageOf(err)}`);
  }
  if (stat.isSymbolicLink()) {
    throw failedPrecondition(
      `socket path ${path} is a symlink; berth does not follow or remove it. Remove it or listen elsewhere`,
    );
  }
  if (!stat.isSocket()) {
    throw failedPrecondition(
      `socket path ${path} exists and is not a socket; berth leaves it untouched. Remove it or listen elsewhere`,
    );
  }
  if (await socketAnswers(path)) {
    throw failedPrecondition(`another server is already listening on ${path}; stop it or listen elsewhere`);
  }
  await unlink(path);
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Runs bind with a umask that creates the socket no more open than `mode`,
 * so there is no moment when others could connect, then sets the mode
 * exactly. Returns the socket's inode, to remove only our own socket later.
 */
export async function bindWithMode(
  path: string,
  mode: number,
  bind: () => Promise<unknown>,
): Promise<number> {
  const previous = process.umask(~mode & 0o777);
  try {
    await bind();
  } finally {
    process.umask(previous);
  }
  await chmod(path, mode);
  return (await lstat(path)).ino;
}

/** Removes the socket file if it is still the one we bound. */
export async function releaseSocketPath(path: string, inode: number): Promise<void> {
  try {
    const stat = await lstat(path);
    if (stat.isSocket() && stat.ino === inode) await unlink(path);
  } catch {
    // Already gone: nothing to release.
  }
}
