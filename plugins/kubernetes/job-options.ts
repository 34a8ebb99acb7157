import { z } from "zod";
import { keyValueMap } from "../../src/key-value.js";
import { invalidArgument, permissionDenied } from "../../src/errors.js";
import type { KubernetesOptions } from "./options.js";

/** What a job may ask of the kubernetes driver through backend_options. */
export interface JobOptions {
  namespace?: string;
  serviceAccount?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  resources?: Resources;
  imagePullSecrets?: string[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  runtimeClass?: string;
  privileged: boolean;
}

/** The backend_options keys a job may give; the core handles the others before parseJobOptions. */
export const jobOptionKeys = [
  "namespace",
  "service_account",
  "node_selector",
  "tolerations",
  "resources",
  "image_pull_secrets",
  "annotations",
  "labels",
  "runtime_class",
  "privileged",
] as const;

const tolerationSchema = z
  .object({
    key: z.string().optional(),
    operator: z.enum(["Exists", "Equal"]).optional(),
    value: z.string().optional(),
    effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional(),
    tolerationSeconds: z.number().int().optional(),
  })
  .strict();
type Toleration = z.infer<typeof tolerationSchema>;

const quantities = z.record(z.string(), z.union([z.string(), z.number()]).transform(String));
const resourcesSchema = z.object({ requests: quantities.optional(), limits: quantities.optional() }).strict();
type Resources = z.infer<typeof resourcesSchema>;

/** DNS-1123 label: namespaces, service accounts, secrets and runtime classes are named so. */
const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Validates a job's backend_options against what the driver's configuration
 * allows: another namespace or service account, and privileged containers,
 * only where the administrator allowed them.
 */
export function parseJobOptions(raw: Record<string, string>, allowed: KubernetesOptions): JobOptions {
  const options: JobOptions = { privileged: false };
  if (raw.namespace !== undefined) {
    const namespace = name(raw.namespace, "namespace");
    if (namespace !== allowed.namespace && !allowed.allowedNamespaces.includes(namespace)) {
      throw permissionDenied(
        `backend_options namespace=${namespace} is not in this berth's kubernetes allowedNamespaces (${allowed.allowedNamespaces.join(", ") || "none"})`,
      );
    }
    options.namespace = namespace;
  }
  if (raw.service_account !== undefined) {
    const account = name(raw.service_account, "service_account");
    if (!allowed.allowedServiceAccounts.includes(account)) {
      throw permissionDenied(
        `backend_options service_account=${account} is not in this berth's kubernetes allowedServiceAccounts (${allowed.allowedServiceAccounts.join(", ") || "none"})`,
      );
    }
    options.serviceAccount = account;
  }
  if (raw.node_selector !== undefined) options.nodeSelector = stringMap(raw.node_selector, "node_selector");
  if (raw.tolerations !== undefined) {
    options.tolerations = json(
      raw.tolerations,
      "tolerations",
      z.array(tolerationSchema),
      '[{"key":"gpu","operator":"Exists"}]',
    );
  }
  if (raw.resources !== undefined) {
    options.resources = json(
      raw.resources,
      "resources",
      resourcesSchema,
      '{"requests":{"cpu":"500m","memory":"1Gi"},"limits":{"memory":"2Gi"}}',
    );
  }
  if (raw.image_pull_secrets !== undefined) {
    options.imagePullSecrets = raw.image_pull_secrets
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)
      .map((secret) => name(secret, "image_pull_secrets"));
  }
  if (raw.annotations !== undefined) options.annotations = stringMap(raw.annotations, "annotations");
  if (raw.labels !== undefined) {
    options.labels = stringMap(raw.labels, "labels");
    const reserved = Object.keys(options.labels).filter((key) => key.startsWith("berth."));
    if (reserved.length > 0) {
      throw invalidArgument(`backend_options labels: ${reserved.join(", ")} are berth's own labels`);
    }
  }
  if (raw.runtime_class !== undefined) options.runtimeClass = name(raw.runtime_class, "runtime_class");
  if (raw.privileged !== undefined) {
    if (raw.privileged !== "true" && raw.privileged !== "false") {
      throw invalidArgument(`backend_options privileged="${raw.privileged}" is not true or false`);
    }
    options.privileged = raw.privileged === "true";
    if (options.privileged && !allowed.allowPrivileged) {
      throw permissionDenied(
        "backend_options privileged=true is not allowed by this berth's kubernetes configuration (allowPrivileged)",
      );
    }
  }
  return options;
}

function name(value: string, option: string): string {
  const trimmed = value.trim();
  if (!dnsLabel.test(trimmed) || trimmed.length > 63) {
    throw invalidArgument(
      `backend_options ${option}="${value}" is not a Kubernetes name (lower-case letters, digits and "-")`,
    );
  }
  return trimmed;
}

/** A JSON object of strings, or `key=value,key=value`. */
function stringMap(value: string, option: string): Record<string, string> {
  if (value.trim().startsWith("{"))
    return json(value, option, z.record(z.string(), z.string()), '{"key":"value"}');
  const pairs = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  return keyValueMap(pairs, (pair) => {
    throw invalidArgument(
      `backend_options ${option}: "${pair}" is not key=value (give key=value,key=value or a JSON object)`,
    );
  });
}

function json<T>(value: string, option: string, schema: z.ZodType<T>, example: string): T {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    throw invalidArgument(
      `backend_options ${option} is not valid JSON (${(err as Error).message}); e.g. ${example}`,
    );
  }
  const result = schema.safeParse(parsed);
  if (!result.success) {
    const problem = result.error.issues
      .map((issue) => `${issue.path.join(".") || "value"}: ${issue.message}`)
      .join("; ");
    throw invalidArgument(`backend_options ${option}: ${problem}; e.g. ${example}`);
  }
  return result.data;
}
