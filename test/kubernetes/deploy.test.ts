/**
 * deploy/kubernetes: the manifests parse and say what their README promises;
 * with a test cluster (Kubernetes 1.20), a server-side dry run accepts each
 * one once the fields newer than 1.20 are removed, the Role grants exactly
 * what it lists, and only berth's container gets the API token.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parse, parseAllDocuments, stringify } from "yaml";
import { kubernetesTestOptions } from "../support/kubernetes.js";

const deployDir = fileURLToPath(new URL("../../../deploy/kubernetes/", import.meta.url));

/**
 * Fields the manifests use that a Kubernetes 1.20 API server does not accept,
 * by kind; `[]` means every element of a list. The dry run removes exactly
 * these, and deploy/kubernetes/README.md must list exactly these.
 */
const fieldsNewerThan120: { kind: string; path: string }[] = [
  // Native sidecars (1.29+).
  { kind: "Deployment", path: "spec.template.spec.initContainers[].restartPolicy" },
  // Probes are allowed on init containers only when they are native sidecars (1.29+).
  { kind: "Deployment", path: "spec.template.spec.initContainers[].startupProbe" },
];

const socketDir = "/run/berth";
const socketAddress = "unix:///run/berth/berth.sock";

const expectedRules = [
  ...["create", "get", "list", "watch", "delete"].map((verb) => `pods ${verb}`),
  "pods/exec create",
  "pods/exec get",
  "pods/log get",
  ...["get", "list", "watch"].map((verb) => `events ${verb}`),
];

type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: unknown;
};

interface Container {
  name: string;
  image: string;
  args?: string[];
  restartPolicy?: string;
  env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  securityContext?: Record<string, unknown>;
  resources?: { requests?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
}

interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  initContainers?: Container[];
  containers: Container[];
  volumes?: { name: string; emptyDir?: object; secret?: { secretName: string } }[];
}

interface Deployment extends KubeObject {
  spec: { replicas: number; template: { spec: PodSpec } };
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** Every YAML file in deploy/kubernetes, parsed; fails on any parse error or warning. */
async function readManifests(): Promise<Map<string, KubeObject[]>> {
  const files = (await readdir(deployDir)).filter((name) => name.endsWith(".yaml")).sort();
  const manifests = new Map<string, KubeObject[]>();
  for (const file of files) {
    const documents = parseAllDocuments(await readFile(join(deployDir, file), "utf8"));
    assert.ok(Array.isArray(documents), `${file}: not a YAML stream`);
    const objects: KubeObject[] = [];
    for (const document of documents) {
      assert.deepEqual(document.errors, [], `${file}: YAML errors`);
      assert.deepEqual(document.warnings, [], `${file}: YAML warnings`);
      const object = document.toJS() as KubeObject | null;
      if (object === null) continue;
      assert.ok(object.apiVersion && object.kind, `${file}: a document without apiVersion or kind`);
      objects.push(object);
    }
    assert.ok(objects.length > 0, `${file} holds no object`);
    manifests.set(file, objects);
  }
  return manifests;
}

function only(manifests: Map<string, KubeObject[]>, kind: string): KubeObject {
  const found = [...manifests.values()].flat().filter((object) => object.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0];
}

function container(spec: PodSpec, name: string): Container {
  const found = [...(spec.initContainers ?? []), ...spec.containers].find((c) => c.name === name);
  assert.ok(found, `a container named ${name}`);
  return found;
}

/** Removes `path` ("a.b[].c") from `object` in place. */
function removeField(object: unknown, path: string): void {
  const [head, ...rest] = path.split(".");
  if (object === null || typeof object !== "object") return;
  const record = object as Record<string, unknown>;
  const isList = head.endsWith("[]");
  const key = isList ? head.slice(0, -2) : head;
  if (rest.length === 0) {
    delete record[key];
    return;
  }
  const next = record[key];
  if (isList) {
    if (Array.isArray(next)) for (const element of next) removeField(element, rest.join("."));
  } else {
    removeField(next, rest.join("."));
  }
}

/** Objects as one YAML stream, for kubectl -f -. */
function yamlStream(objects: KubeObject[] | undefined): string {
  assert.ok(objects, "objects to apply");
  return objects.map((object) => stringify(object)).join("---\n");
}

function withoutNewerFields(object: KubeObject): KubeObject {
  const copy = structuredClone(object);
  for (const field of fieldsNewerThan120) if (field.kind === copy.kind) removeField(copy, field.path);
  return copy;
}

describe("deploy/kubernetes", () => {
  test("every YAML file parses without errors", async () => {
    const manifests = await readManifests();
    assert.deepEqual(
      [...manifests.keys()],
      [
        "configmap.yaml",
        "kustomization.yaml",
        "role.yaml",
        "rolebinding.yaml",
        "runner.yaml",
        "serviceaccount.yaml",
      ],
    );
  });

  test("the runner and berth share the socket emptyDir at /run/berth", async () => {
    const spec = (only(await readManifests(), "Deployment") as Deployment).spec.template.spec;
    const mountsOf = (c: Container) => (c.volumeMounts ?? []).filter((m) => m.mountPath === socketDir);
    const berthMounts = mountsOf(container(spec, "berth"));
    const runnerMounts = mountsOf(container(spec, "runner"));
    assert.equal(berthMounts.length, 1, "berth mounts /run/berth");
    assert.equal(runnerMounts.length, 1, "the runner mounts /run/berth");
    assert.equal(runnerMounts[0].name, berthMounts[0].name, "the same volume");
    const volume = spec.volumes?.find((v) => v.name === berthMounts[0].name);
    assert.deepEqual(volume?.emptyDir, {}, "the socket volume is an emptyDir");
  });

  test("berth is a native sidecar serving the socket the runner's config names", async () => {
    const manifests = await readManifests();
    const deployment = only(manifests, "Deployment") as Deployment;
    assert.equal(deployment.spec.replicas, 1);
    const spec = deployment.spec.template.spec;
    const berth = spec.initContainers?.find((c) => c.name === "berth");
    assert.ok(berth, "berth is an init container");
    assert.equal(berth.restartPolicy, "Always");
    assert.ok(!spec.containers.some((c) => c.name === "berth"), "berth is not also a regular container");
    assert.equal(berth.image, "berth:0.1.0");
    assert.deepEqual(berth.args, [
      "serve",
      "--backend",
      "kubernetes",
      "--listen",
      socketAddress,
      "--backend-opt",
      "ownerReferences=true",
      "--state-dir",
      "/var/lib/berth",
    ]);
    // The state directory is a volume (the root filesystem is read-only), kept across berth's restarts.
    const stateMount = berth.volumeMounts?.find((m) => m.mountPath === "/var/lib/berth");
    assert.ok(stateMount && spec.volumes?.find((v) => v.name === stateMount.name)?.emptyDir);
    assert.deepEqual(
      berth.env?.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath]),
      [
        ["POD_NAME", "metadata.name"],
        ["POD_NAMESPACE", "metadata.namespace"],
      ],
    );
    assert.deepEqual(berth.securityContext, {
      runAsNonRoot: true,
      runAsUser: 10001,
      runAsGroup: 10001,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    assert.ok(
      berth.resources?.requests?.cpu && berth.resources.requests.memory,
      "berth has resource requests",
    );

    const runner = container(spec, "runner");
    assert.equal(runner.image, "code.forgejo.org/forgejo/runner:13");
    const registration = spec.volumes?.find((v) => v.secret);
    assert.equal(registration?.secret?.secretName, "runner-registration");
    assert.ok(runner.volumeMounts?.some((m) => m.name === registration.name));

    const configMap = only(manifests, "ConfigMap") as KubeObject & { data: Record<string, string> };
    const config = parse(configMap.data["config.yml"]) as {
      plugins: Record<string, { address: string }>;
      runner: { labels: string[] };
    };
    assert.deepEqual(config.plugins, { berth: { address: socketAddress } });
    assert.ok(config.runner.labels.length > 0);
    for (const label of config.runner.labels) assert.match(label, /^[^:]+:berth:/);
  });

  test("berth's ServiceAccount is the pod's, bound to the Role", async () => {
    const manifests = await readManifests();
    const serviceAccount = only(manifests, "ServiceAccount");
    const spec = (only(manifests, "Deployment") as Deployment).spec.template.spec;
    assert.equal(spec.serviceAccountName, serviceAccount.metadata.name);
    assert.equal(spec.automountServiceAccountToken, true);
    const role = only(manifests, "Role");
    const binding = only(manifests, "RoleBinding") as KubeObject & {
      roleRef: { kind: string; name: string };
      subjects: { kind: string; name: string }[];
    };
    assert.deepEqual(binding.roleRef, {
      apiGroup: "rbac.authorization.k8s.io",
      kind: "Role",
      name: role.metadata.name,
    });
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: serviceAccount.metadata.name }]);
  });

  test("the Role grants exactly what berth's driver needs, without wildcards", async () => {
    const role = only(await readManifests(), "Role") as KubeObject & { rules: Rule[] };
    const granted: string[] = [];
    for (const rule of role.rules) {
      assert.deepEqual(Object.keys(rule).sort(), ["apiGroups", "resources", "verbs"], "no other rule fields");
      assert.deepEqual(rule.apiGroups, [""], "core API group only");
      for (const resource of rule.resources) {
        for (const verb of rule.verbs) {
          assert.ok(!resource.includes("*") && !verb.includes("*"), `no wildcard: ${resource} ${verb}`);
          granted.push(`${resource} ${verb}`);
        }
      }
    }
    assert.deepEqual(granted.sort(), [...expectedRules].sort());
  });

  test("kustomization.yaml lists every other manifest and berth's image", async () => {
    const manifests = await readManifests();
    const kustomization = only(manifests, "Kustomization") as KubeObject & {
      resources: string[];
      images: { name: string; newName?: string; newTag?: string }[];
    };
    const others = [...manifests.keys()].filter((file) => file !== "kustomization.yaml");
    assert.deepEqual([...kustomization.resources].sort(), others);
    assert.deepEqual(
      kustomization.images.map((image) => image.name),
      ["berth"],
    );
  });

  test("the README lists exactly the fields newer than Kubernetes 1.20, and every file", async () => {
    const readme = await readFile(join(deployDir, "README.md"), "utf8");
    const heading = "## Fields newer than Kubernetes 1.20";
    const start = readme.indexOf(heading);
    assert.ok(start >= 0, `README has "${heading}"`);
    const end = readme.indexOf("\n## ", start + heading.length);
    const section = readme.slice(start, end < 0 ? undefined : end);
    const listed = [...section.matchAll(/^\| `([^`]+)`/gm)].map((m) => m[1]);
    assert.deepEqual(listed.sort(), fieldsNewerThan120.map((f) => f.path).sort());
    assert.match(section, /move berth from `initContainers` to `containers`/);
    for (const file of (await readManifests()).keys())
      assert.ok(readme.includes(`\`${file}\``), `README names ${file}`);
  });
});

const kube = kubernetesTestOptions();

interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function kubectl(args: string[], input?: string): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(kube.kubectl, [`--kubeconfig=${kube.kubeconfig}`, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const result = await kubectl(args, input);
  assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

describe("deploy/kubernetes on a Kubernetes 1.20 API server", { skip: kube.skip }, () => {
  const run = randomUUID();
  const namespace = `berth-deploy-test-${run.slice(0, 8)}`;

  before(async () => {
    await kubectlOk(["create", "namespace", namespace]);
    await kubectlOk(["label", "namespace", namespace, `berth.test-run=${run}`]);
  });

  after(async () => {
    await kubectlOk(["delete", "namespace", namespace, "--wait=false"]);
  });

  test("a server-side dry run accepts every manifest without the newer fields", async () => {
    const manifests = await readManifests();
    for (const [file, objects] of manifests) {
      if (file === "kustomization.yaml") continue;
      for (const object of objects) {
        const input = stringify(withoutNewerFields(object));
        const out = await kubectlOk(["-n", namespace, "apply", "--dry-run=server", "-f", "-"], input);
        assert.match(out, /\(server dry run\)/, `${file}: ${object.kind} ${object.metadata.name}: ${out}`);
      }
    }
  });

  test("a 1.20 API server refuses the Deployment with each newer field", async () => {
    const deployment = only(await readManifests(), "Deployment");
    const withoutProbe = structuredClone(deployment);
    removeField(withoutProbe, "spec.template.spec.initContainers[].startupProbe");
    const validated = await kubectl(
      ["-n", namespace, "apply", "--dry-run=server", "-f", "-"],
      stringify(withoutProbe),
    );
    assert.notEqual(validated.code, 0);
    assert.match(validated.stderr, /unknown field "restartPolicy"/);
    const unvalidated = await kubectl(
      ["-n", namespace, "apply", "--dry-run=server", "--validate=false", "-f", "-"],
      stringify(deployment),
    );
    assert.notEqual(unvalidated.code, 0);
    assert.match(
      unvalidated.stderr,
      /initContainers\[0\]\.startupProbe.*must not be set for init containers/,
    );
  });

  test("the Role lets berth's ServiceAccount do what it lists, in its namespace only", async () => {
    const manifests = await readManifests();
    for (const file of ["serviceaccount.yaml", "role.yaml", "rolebinding.yaml"]) {
      await kubectlOk(["-n", namespace, "apply", "-f", "-"], yamlStream(manifests.get(file)));
    }
    const as = `--as=system:serviceaccount:${namespace}:berth`;
    const canI = async (verb: string, resource: string, ns = namespace) => {
      const [name, subresource] = resource.split("/");
      const args = ["-n", ns, "auth", "can-i", verb, name, as];
      if (subresource) args.push(`--subresource=${subresource}`);
      return (await kubectl(args)).stdout.trim();
    };
    for (const rule of expectedRules) {
      const [resource, verb] = rule.split(" ");
      assert.equal(await canI(verb, resource), "yes", `may ${verb} ${resource}`);
    }
    const denied = [
      "update pods",
      "patch pods",
      "get secrets",
      "list configmaps",
      "create pods/attach",
      "create pods/portforward",
      "create pods/eviction",
      "delete events",
    ];
    for (const rule of denied) {
      const [verb, resource] = rule.split(" ");
      assert.equal(await canI(verb, resource), "no", `may not ${verb} ${resource}`);
    }
    assert.equal(await canI("create", "pods", "default"), "no", "not in another namespace");
  });

  test("only berth's container gets the ServiceAccount's API token", async () => {
    const manifests = await readManifests();
    await kubectlOk(["-n", namespace, "apply", "-f", "-"], yamlStream(manifests.get("serviceaccount.yaml")));
    // Kubernetes 1.20 admits a pod only once the token controller has made
    // the ServiceAccount's token Secret.
    const deadline = Date.now() + 60_000;
    while (
      !(await kubectlOk([
        "-n",
        namespace,
        "get",
        "serviceaccount",
        "berth",
        "-o",
        "jsonpath={.secrets[0].name}",
      ]))
    ) {
      assert.ok(Date.now() < deadline, "the ServiceAccount got no token Secret within 60 s");
      await sleep(500);
    }
    const deployment = withoutNewerFields(only(manifests, "Deployment")) as Deployment;
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "forgejo-runner-dry-run" },
      spec: deployment.spec.template.spec,
    };
    const admitted = JSON.parse(
      await kubectlOk(
        ["-n", namespace, "create", "--dry-run=server", "-o", "json", "-f", "-"],
        stringify(pod),
      ),
    ) as { spec: PodSpec };
    const tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount";
    const tokenVolumes = new Set(admitted.spec.volumes?.filter((v) => v.secret).map((v) => v.name));
    const tokenMount = (name: string) =>
      container(admitted.spec, name).volumeMounts?.find((m) => m.mountPath === tokenPath);
    assert.ok(tokenVolumes.has(tokenMount("berth")?.name ?? ""), "berth mounts the token Secret");
    const runnerMount = tokenMount("runner");
    assert.ok(runnerMount, "the runner masks the token path");
    assert.ok(!tokenVolumes.has(runnerMount.name), "the runner's mount there is not a Secret");
  });

  test("kubectl kustomize renders the manifests and the images entry moves berth's image", async () => {
    const copy = await mkdtemp(join(tmpdir(), "berth-deploy-"));
    try {
      await cp(deployDir, copy, { recursive: true });
      const kustomizationFile = join(copy, "kustomization.yaml");
      const kustomization = parse(await readFile(kustomizationFile, "utf8")) as {
        images: { name: string; newName: string; newTag: string }[];
      };
      kustomization.images = [{ name: "berth", newName: "registry.example/ci/berth", newTag: "9.9.9" }];
      await writeFile(kustomizationFile, stringify(kustomization));
      const rendered = parseAllDocuments(await kubectlOk(["kustomize", copy]));
      assert.ok(Array.isArray(rendered));
      const objects = rendered.map((d) => d.toJS() as KubeObject);
      assert.deepEqual(objects.map((o) => o.kind).sort(), [
        "ConfigMap",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
      ]);
      const deployment = objects.find((o) => o.kind === "Deployment") as Deployment;
      assert.equal(
        container(deployment.spec.template.spec, "berth").image,
        "registry.example/ci/berth:9.9.9",
      );
      assert.equal(
        container(deployment.spec.template.spec, "runner").image,
        "code.forgejo.org/forgejo/runner:13",
      );
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  });
});
