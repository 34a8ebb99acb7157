import { readFile } from "node:fs/promises";
import type { V1Pod, V1PodSpec } from "@kubernetes/client-node";
import { parse as parseYaml } from "yaml";
import { invalidArgument, messageOf } from "../../src/errors.js";
import type { PodInputs } from "./pod.js";

/** What every job pod starts from: the labels and annotations of a template's metadata, and its spec. */
export type PodTemplate = PodInputs["template"];

/** Reads a pod template file: a Pod (its metadata's labels and annotations, and its spec) or a bare PodSpec. */
export async function loadPodTemplate(file: string): Promise<PodTemplate> {
  let document: unknown;
  try {
    document = parseYaml(await readFile(file, "utf8"));
  } catch (err) {
    throw invalidArgument(`driver kubernetes: option "podTemplate": cannot read ${file}: ${messageOf(err)}`);
  }
  const object = (document ?? {}) as { kind?: string; metadata?: V1Pod["metadata"]; spec?: V1PodSpec };
  const isPod = object.kind === "Pod" || object.spec !== undefined;
  const spec = (isPod ? object.spec : document) as V1PodSpec | undefined;
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    throw invalidArgument(
      `driver kubernetes: option "podTemplate": ${file} holds neither a Pod nor a PodSpec`,
    );
  }
  return {
    metadata: isPod ? { labels: object.metadata?.labels, annotations: object.metadata?.annotations } : {},
    spec: { ...spec, containers: spec.containers ?? [] },
  };
}
