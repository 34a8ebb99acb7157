import { execFileSync } from "node:child_process";
import { dockerTestOptions, ensureTestImages, testImages } from "../support/docker-images.js";
import { runnerSuite } from "./scenarios.js";

const docker = await dockerTestOptions();
if (!docker.skip) await ensureTestImages();

/** Containers, networks and volumes of an environment, by berth's label. */
function dockerObjectsOf(id: string): string[] {
  const list = (args: string[], format: string) =>
    execFileSync("docker", [...args, "--filter", `label=berth.environment=${id}`, "--format", format], {
      encoding: "utf8",
    })
      .split("\n")
      .filter(Boolean)
      .map((name) => `${args[0]} ${name}`);
  return [
    ...list(["ps", "-a"], "{{.Names}}"),
    ...list(["network", "ls"], "{{.Name}}"),
    ...list(["volume", "ls"], "{{.Name}}"),
  ];
}

runnerSuite({
  driver: "docker",
  serveArgs: ["--backend", "docker"],
  labelArg: testImages.busybox,
  containerImage: testImages.web,
  serviceImage: testImages.web,
  leftovers: async (id) => dockerObjectsOf(id),
  skip: docker.skip,
});
