/**
 * The labels on every object a container driver creates (Docker containers,
 * networks and volumes; Kubernetes pods), so berth finds its own again:
 * the reconciler lists by instance, Remove by environment.
 */
export const labels = {
  managed: "berth.managed",
  instance: "berth.instance",
  environment: "berth.environment",
  /** Unix seconds: a Kubernetes label value cannot hold an ISO time. */
  created: "berth.created",
  /** Docker: which container of an environment this is (`job`, `service:<name>`). */
  role: "berth.role",
} as const;

/** The labels that tie an object to its instance and environment, and say when it was made. */
export function environmentLabels(
  instance: string,
  environmentId: string,
  now: Date,
): Record<string, string> {
  return {
    [labels.managed]: "true",
    [labels.instance]: instance,
    [labels.environment]: environmentId,
    [labels.created]: String(Math.floor(now.getTime() / 1000)),
  };
}

/**
 * When an object was made, from its labels. berth 0.1's Docker driver wrote
 * an ISO time; those objects are still read, so an upgrade keeps their age.
 */
export function createdAt(objectLabels: Record<string, string> | undefined): Date | undefined {
  const value = objectLabels?.[labels.created];
  if (!value) return undefined;
  const created = /^\d+$/.test(value) ? new Date(Number(value) * 1000) : new Date(value);
  return Number.isNaN(created.getTime()) ? undefined : created;
}
