import type { Layout } from "../../src/driver.js";

/** Where an environment's directories are inside a job container (as the runner's own Docker backend has them). */
export const containerLayoutPaths = {
  rootPath: "/workspace",
  actPath: "/var/run/act",
  toolCachePath: "/opt/hostedtoolcache",
  tempPath: "/tmp",
} as const;

/** The layout of a Linux job container on the given platform (the runner's OS and arch names). */
export function containerLayout(platform: { os: string; arch: string }): Layout {
  return {
    ...containerLayoutPaths,
    pathVariableName: "PATH",
    defaultPathVariable: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    pathSeparator: ":",
    environmentCaseInsensitive: false,
    ...platform,
  };
}
