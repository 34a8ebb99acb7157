import type {
  V1Container,
  V1ObjectMeta,
  V1OwnerReference,
  V1Pod,
  V1PodSpec,
  V1VolumeMount,
} from "@kubernetes/client-node";
import type { EnvironmentSpec } from "../../src/driver.js";
import { invalidArgument } from "../../src/errors.js";
import { containerLayoutPaths } from "../kit/container-layout.js";
import { environmentLabels } from "../kit/labels.js";
import { type PortSpec, parsePortSpec } from "../kit/service-ports.js";
import type { JobOptions } from "./job-options.js";

export const jobContainerName = "job";

/** The environment's directories in the job container are all on one emptyDir volume. */
const layoutPaths = containerLayoutPaths;
const environmentVolume = "berth-environment";
const environmentMounts: V1VolumeMount[] = [
  { name: environmentVolume, mountPath: layoutPaths.rootPath, subPath: "workspace" },
  { name: environmentVolume, mountPath: layoutPaths.actPath, subPath: "act" },
  { name: environmentVolume, mountPath: layoutPaths.toolCachePath, subPath: "toolcache" },
  { name: environmentVolume, mountPath: layoutPaths.tempPath, subPath: "tmp" },
];

/**
 * The job container runs this instead of its image's entrypoint, so Exec can
 * run the steps; it leaves at once on SIGTERM so deleting the pod is quick.
 */
const keepAlive = ["sh", "-c", "trap 'exit 0' TERM INT; tail -f /dev/null & wait"];

export interface PodInputs {
  id: string;
  /** This berth's instance name, for the instance label. */
  instance: string;
  namespace: string;
  spec: EnvironmentSpec;
  job: JobOptions;
  /** The administrator's pod template (already reduced to metadata and spec). */
  template: {
    metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
    spec: V1PodSpec;
  };
  activeDeadlineSeconds: number;
  /** Services as native sidecars (init containers that keep running; Kubernetes 1.29+). */
  nativeSidecars: boolean;
  owner?: V1OwnerReference;
  now: Date;
}

/**
 * A service's host name in the pod: its name as a DNS-1123 label (lower
 * case, "-" for anything else, at most 54 characters so its container
 * name fits in 63), since workflows name services freely ("Redis", "my_db").
 */
export function serviceHostName(service: string): string {
  const label = service
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 54)
    .replace(/-+$/, "");
  if (!label) {
    throw invalidArgument(`service name "${service}" has no letter or digit to make a host name of`);
  }
  return label;
}

/** A service's container name: its host name, prefixed. */
export function serviceContainerName(service: string): string {
  return `service-${serviceHostName(service)}`;
}

/**
 * Service names that are not host names as written (an "_", say): the pod
 * has them under their DNS names, and Start adds the written ones to the job
 * container's /etc/hosts. Host names compare without case, so capitals
 * alone need nothing.
 */
export function extraServiceHostNames(services: { name: string }[]): string[] {
  return services.map((s) => s.name).filter((name) => serviceHostName(name) !== name.toLowerCase());
}

/**
 * The job's pod: the template, then the job's backend options, then what
 * berth needs (which wins: its labels, the keep-alive command, the volume).
 */
export function buildPod(inputs: PodInputs): V1Pod {
  const { spec } = inputs;
  const image = spec.image || spec.labelArg;
  if (!image) throw invalidArgument("the kubernetes driver needs an image: set the job's container image");
  const pullPolicy = spec.forcePull ? "Always" : undefined;
  const hostNames = distinctServiceHostNames(spec.services);
  const jobContainer = buildJobContainer(inputs, image, pullPolicy);
  const services = buildServiceContainers(inputs, pullPolicy);
  const podSpec = buildPodSpec(inputs, { jobContainer, services }, hostNames);
  return { apiVersion: "v1", kind: "Pod", metadata: buildPodMetadata(inputs), spec: podSpec };
}

/** The services' host names, in their order; two services that would share one are refused. */
function distinctServiceHostNames(services: { name: string }[]): string[] {
  const hostNames = new Map<string, string>();
  for (const service of services) {
    const host = serviceHostName(service.name);
    const other = hostNames.get(host);
    if (other !== undefined) {
      throw invalidArgument(
        `services "${other}" and "${service.name}" would both be host ${host} in the pod; rename one`,
      );
    }
    hostNames.set(host, service.name);
  }
  return [...hostNames.keys()];
}

/** The template's container named "job", refined by the job and given berth's command and mounts. */
function buildJobContainer(inputs: PodInputs, image: string, pullPolicy: "Always" | undefined): V1Container {
  const { spec, job, template } = inputs;
  const templateJob = template.spec.containers.find((c) => c.name === jobContainerName);
  return {
    ...templateJob,
    name: jobContainerName,
    image,
    imagePullPolicy: pullPolicy ?? templateJob?.imagePullPolicy,
    command: keepAlive,
    args: undefined,
    workingDir: spec.workingDir || templateJob?.workingDir,
    env: [...(templateJob?.env ?? []), ...Object.entries(spec.env).map(([name, value]) => ({ name, value }))],
    resources: job.resources ?? templateJob?.resources,
    securityContext: {
      ...templateJob?.securityContext,
      ...(job.privileged ? { privileged: true } : {}),
      ...(spec.capAdd.length > 0 || spec.capDrop.length > 0
        ? {
            capabilities: {
              add: [...(templateJob?.securityContext?.capabilities?.add ?? []), ...spec.capAdd],
              drop: [...(templateJob?.securityContext?.capabilities?.drop ?? []), ...spec.capDrop],
            },
          }
        : {}),
    },
    volumeMounts: [...(templateJob?.volumeMounts ?? []), ...environmentMounts],
  };
}

function buildServiceContainers(inputs: PodInputs, pullPolicy: "Always" | undefined): V1Container[] {
  return inputs.spec.services.map((service) => ({
    name: serviceContainerName(service.name),
    image: service.image,
    imagePullPolicy: pullPolicy,
    env: Object.entries(service.env).map(([name, value]) => ({ name, value })),
    // Host ports have no meaning inside a pod: the job reaches a service on
    // localhost and by its name at the container port.
    ports: uniquePorts(service.ports.flatMap((port) => parsePortSpec(port, service.name))),
    ...(inputs.nativeSidecars ? { restartPolicy: "Always" } : {}),
  }));
}

/** The template's spec with the job's options and berth's containers, host aliases and volume added. */
function buildPodSpec(
  inputs: PodInputs,
  containers: { jobContainer: V1Container; services: V1Container[] },
  hostNames: string[],
): V1PodSpec {
  const { spec, job, template } = inputs;
  const { jobContainer, services } = containers;
  const otherContainers = template.spec.containers.filter((c) => c.name !== jobContainerName);
  const deadlines = [inputs.activeDeadlineSeconds, template.spec.activeDeadlineSeconds].filter(
    (s): s is number => typeof s === "number",
  );
  return {
    // Job pods get no API token unless the template or a chosen service account wants one.
    automountServiceAccountToken: job.serviceAccount ? undefined : false,
    // No environment variables for every Service in the namespace: a job sees only its own.
    enableServiceLinks: false,
    ...template.spec,
    restartPolicy: "Never",
    activeDeadlineSeconds: Math.min(...deadlines),
    serviceAccountName: job.serviceAccount ?? template.spec.serviceAccountName,
    runtimeClassName: job.runtimeClass ?? template.spec.runtimeClassName,
    nodeSelector: { ...template.spec.nodeSelector, ...job.nodeSelector },
    tolerations: [...(template.spec.tolerations ?? []), ...(job.tolerations ?? [])],
    imagePullSecrets: [
      ...(template.spec.imagePullSecrets ?? []),
      ...(job.imagePullSecrets ?? []).map((name) => ({ name })),
    ],
    hostAliases: [
      ...(template.spec.hostAliases ?? []),
      ...(spec.services.length > 0 ? [{ ip: "127.0.0.1", hostnames: hostNames }] : []),
    ],
    initContainers: [...(template.spec.initContainers ?? []), ...(inputs.nativeSidecars ? services : [])],
    containers: [jobContainer, ...otherContainers, ...(inputs.nativeSidecars ? [] : services)],
    volumes: [...(template.spec.volumes ?? []), { name: environmentVolume, emptyDir: {} }],
  };
}

function buildPodMetadata(inputs: PodInputs): V1ObjectMeta {
  const { id, spec, job, template } = inputs;
  return {
    name: id,
    namespace: inputs.namespace,
    labels: {
      ...template.metadata.labels,
      ...job.labels,
      ...environmentLabels(inputs.instance, id, inputs.now),
    },
    annotations: {
      ...template.metadata.annotations,
      ...job.annotations,
      "berth.created-at": inputs.now.toISOString(),
      ...(spec.name ? { "berth.job-name": spec.name } : {}),
    },
    ...(inputs.owner ? { ownerReferences: [inputs.owner] } : {}),
  };
}

/** Container ports of a service, once each (host ports mean nothing inside a pod). */
function uniquePorts(specs: PortSpec[]): { containerPort: number; protocol: string }[] {
  const seen = new Map<string, { containerPort: number; protocol: string }>();
  for (const { containerPort, protocol } of specs) {
    seen.set(`${containerPort}/${protocol}`, { containerPort, protocol: protocol.toUpperCase() });
  }
  return [...seen.values()];
}

/**
 * A job pod's activeDeadlineSeconds: the runner's environment_timeout plus a
 * minute (berth removes the pod itself at the timeout; the deadline is the
 * safety net if berth is gone), never more than the configured bound.
 */
export function deadlineSeconds(timeoutMs: number | undefined, configured: number): number {
  return timeoutMs !== undefined && timeoutMs > 0
    ? Math.min(Math.ceil(timeoutMs / 1000) + 60, configured)
    : configured;
}
