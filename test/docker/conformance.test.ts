import { conformanceSuite } from "../conformance.js";
import { dockerTestOptions, ensureTestImages, testImages } from "../support/docker-images.js";

const docker = await dockerTestOptions();
if (!docker.skip) await ensureTestImages();

conformanceSuite({
  driver: "docker",
  serveArgs: ["--backend", "docker"],
  image: testImages.busybox,
  generations: ["v1", "v1alpha"],
  skip: docker.skip,
});
