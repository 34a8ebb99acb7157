/** RUNNER_OS as runners name it, from an engine's, cluster's or Node's OS name ("linux" → "Linux"). */
export function runnerOs(os: string | undefined): string {
  return (
    { linux: "Linux", windows: "Windows", win32: "Windows", darwin: "macOS" }[os ?? "linux"] ?? os ?? "Linux"
  );
}

/** RUNNER_ARCH as runners name it, from an engine's, cluster's or Node's architecture ("amd64" → "X64"). */
export function runnerArch(arch: string | undefined): string {
  const known: Record<string, string> = {
    amd64: "X64",
    x86_64: "X64",
    x64: "X64",
    arm64: "ARM64",
    aarch64: "ARM64",
    arm: "ARM",
    "386": "X86",
    ia32: "X86",
  };
  return known[arch ?? "amd64"] ?? arch ?? "X64";
}
