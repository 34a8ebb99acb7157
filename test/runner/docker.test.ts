import {
  dockerObjectsLabelled,
  dockerTestOptions,
  ensureTestImages,
  testImages,
} from "../support/docker-images.js";
import { runnerSuite } from "./scenarios.js";

const docker = await dockerTestOptions();
if (!docker.skip) await ensureTestImages();

runnerSuite({
  driver: "docker",
  serveArgs: ["--backend", "docker"],
  labelArg: testImages.busybox,
  containerImage: testImages.web,
  serviceImage: testImages.web,
  leftovers: async (id) => dockerObjectsLabelled(`berth.environment=${id}`),
  skip: docker.skip,
});
