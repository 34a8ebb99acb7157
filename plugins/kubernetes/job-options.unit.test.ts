/**
 * What a job may ask of the kubernetes driver through backend_options,
 * against what the administrator allowed: another namespace, service
 * account or privileged containers only where allowed (PERMISSION_DENIED),
 * names and JSON checked (INVALID_ARGUMENT naming the option and giving an
 * example), maps as key=value lists or JSON objects.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BerthError, Status } from "../../src/errors.js";
import { jobOptionKeys, parseJobOptions } from "./job-options.js";
import { type KubernetesOptions, kubernetesOptionsSchema } from "./options.js";

/** The driver's options as the driver passes them: defaults, its namespace resolved, then these. */
const allowing = (options: Record<string, unknown> = {}): KubernetesOptions =>
  kubernetesOptionsSchema.parse({ namespace: "ci", ...options });

const refused = (code: Status, pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
  assert.equal(Status[err.code], Status[code], err.message);
  assert.match(err.message, pattern);
  return true;
};

describe("defaults", () => {
  test("no options: not privileged, nothing else set", () => {
    assert.deepEqual(parseJobOptions({}, allowing()), { privileged: false });
  });

  test("the keys a job may give are the ones parseJobOptions reads", () => {
    const everything = parseJobOptions(
      {
        namespace: "ci",
        service_account: "builder",
        node_selector: "a=b",
        tolerations: "[]",
        resources: "{}",
        image_pull_secrets: "regcred",
        annotations: "a=b",
        labels: "a=b",
        runtime_class: "gvisor",
        privileged: "false",
      },
      allowing({ allowedServiceAccounts: ["builder"] }),
    );
    assert.equal(Object.keys(everything).length, jobOptionKeys.length);
  });
});

describe("namespaces, service accounts, privileged", () => {
  test("the driver's namespace and allowedNamespaces are allowed; any other is PERMISSION_DENIED", () => {
    const allowed = allowing({ allowedNamespaces: ["builds", "gpu"] });
    assert.equal(parseJobOptions({ namespace: "ci" }, allowed).namespace, "ci");
    assert.equal(parseJobOptions({ namespace: " gpu " }, allowed).namespace, "gpu");
    assert.throws(
      () => parseJobOptions({ namespace: "kube-system" }, allowed),
      refused(
        Status.PERMISSION_DENIED,
        /^backend_options namespace=kube-system is not in this berth's kubernetes allowedNamespaces \(builds, gpu\)$/,
      ),
    );
    assert.throws(
      () => parseJobOptions({ namespace: "other" }, allowing()),
      refused(Status.PERMISSION_DENIED, /allowedNamespaces \(none\)/),
    );
  });

  test("a service account only from allowedServiceAccounts", () => {
    const allowed = allowing({ allowedServiceAccounts: ["builder"] });
    assert.equal(parseJobOptions({ service_account: "builder" }, allowed).serviceAccount, "builder");
    assert.throws(
      () => parseJobOptions({ service_account: "default" }, allowed),
      refused(
        Status.PERMISSION_DENIED,
        /service_account=default is not in .*allowedServiceAccounts \(builder\)/,
      ),
    );
  });

  test("privileged=true only where allowPrivileged; other words than true and false are refused", () => {
    assert.throws(
      () => parseJobOptions({ privileged: "true" }, allowing()),
      refused(Status.PERMISSION_DENIED, /privileged=true is not allowed .*kubernetes.*\(allowPrivileged\)/),
    );
    assert.equal(
      parseJobOptions({ privileged: "true" }, allowing({ allowPrivileged: true })).privileged,
      true,
    );
    assert.equal(parseJobOptions({ privileged: "false" }, allowing()).privileged, false);
    assert.throws(
      () => parseJobOptions({ privileged: "yes" }, allowing({ allowPrivileged: true })),
      refused(Status.INVALID_ARGUMENT, /privileged="yes" is not true or false/),
    );
  });

  test("names that are no DNS-1123 label are INVALID_ARGUMENT before any allow-list is asked", () => {
    const allowed = allowing({ allowedNamespaces: ["Builds"], allowedServiceAccounts: ["Builder"] });
    for (const [option, value] of [
      ["namespace", "Builds"],
      ["namespace", "-ci"],
      ["namespace", "c".repeat(64)],
      ["service_account", "Builder"],
      ["runtime_class", "g_visor"],
      ["image_pull_secrets", "ok,not ok"],
    ]) {
      assert.throws(
        () => parseJobOptions({ [option]: value }, allowed),
        refused(
          Status.INVALID_ARGUMENT,
          new RegExp(`^backend_options ${option}=".*" is not a Kubernetes name \\(lower-case letters`),
        ),
        `${option}=${value}`,
      );
    }
    assert.equal(
      parseJobOptions({ namespace: "c".repeat(63) }, allowing({ allowedNamespaces: ["c".repeat(63)] }))
        .namespace?.length,
      63,
    );
  });
});

describe("maps, lists and JSON", () => {
  test("node_selector, annotations and labels: key=value lists or JSON objects", () => {
    assert.deepEqual(parseJobOptions({ node_selector: "disk=ssd, zone=a ,," }, allowing()).nodeSelector, {
      disk: "ssd",
      zone: "a",
    });
    assert.deepEqual(
      parseJobOptions({ annotations: '{"example.com/team": "ci", "note": "a=b,c"}' }, allowing()).annotations,
      { "example.com/team": "ci", note: "a=b,c" },
    );
    assert.deepEqual(parseJobOptions({ labels: "team=ci,tier=" }, allowing()).labels, {
      team: "ci",
      tier: "",
    });
    assert.throws(
      () => parseJobOptions({ node_selector: "disk" }, allowing()),
      refused(
        Status.INVALID_ARGUMENT,
        /node_selector: "disk" is not key=value \(give key=value,key=value or a JSON object\)/,
      ),
    );
    assert.throws(
      () => parseJobOptions({ annotations: '{"n": 1}' }, allowing()),
      refused(Status.INVALID_ARGUMENT, /^backend_options annotations: n: .*; e\.g\. \{"key":"value"\}$/),
    );
  });

  test("labels may not be berth's own", () => {
    assert.throws(
      () => parseJobOptions({ labels: "berth.managed=false,team=ci,berth.instance=x" }, allowing()),
      refused(
        Status.INVALID_ARGUMENT,
        /^backend_options labels: berth\.managed, berth\.instance are berth's own labels$/,
      ),
    );
  });

  test("tolerations: a JSON array of tolerations, strictly", () => {
    assert.deepEqual(
      parseJobOptions(
        { tolerations: '[{"key":"gpu","operator":"Exists","effect":"NoSchedule","tolerationSeconds":30}]' },
        allowing(),
      ).tolerations,
      [{ key: "gpu", operator: "Exists", effect: "NoSchedule", tolerationSeconds: 30 }],
    );
    assert.throws(
      () => parseJobOptions({ tolerations: '[{"key":"gpu","operator":"Maybe"}]' }, allowing()),
      refused(
        Status.INVALID_ARGUMENT,
        /^backend_options tolerations: 0\.operator: .*; e\.g\. \[\{"key":"gpu","operator":"Exists"\}\]$/,
      ),
    );
    assert.throws(
      () => parseJobOptions({ tolerations: '[{"key":"gpu","colour":"red"}]' }, allowing()),
      refused(Status.INVALID_ARGUMENT, /^backend_options tolerations: 0: .*colour/),
    );
    assert.throws(
      () => parseJobOptions({ tolerations: "gpu" }, allowing()),
      refused(Status.INVALID_ARGUMENT, /^backend_options tolerations is not valid JSON \(.*\); e\.g\. \[/),
    );
  });

  test("resources: requests and limits, numbers as quantity strings", () => {
    assert.deepEqual(
      parseJobOptions(
        { resources: '{"requests":{"cpu":"500m","memory":"1Gi"},"limits":{"cpu":2}}' },
        allowing(),
      ).resources,
      { requests: { cpu: "500m", memory: "1Gi" }, limits: { cpu: "2" } },
    );
    assert.throws(
      () => parseJobOptions({ resources: '{"request":{"cpu":"1"}}' }, allowing()),
      refused(Status.INVALID_ARGUMENT, /^backend_options resources: value: .*request.*; e\.g\. \{"requests"/),
    );
  });

  test("image_pull_secrets: a comma-separated list of names", () => {
    assert.deepEqual(
      parseJobOptions({ image_pull_secrets: " regcred, ghcr ,," }, allowing()).imagePullSecrets,
      ["regcred", "ghcr"],
    );
  });
});
