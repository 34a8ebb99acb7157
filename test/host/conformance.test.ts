import { conformanceSuite } from "../conformance.js";

conformanceSuite({
  driver: "host",
  serveArgs: ["--backend", "host", "--backend-opt", "isolation=bwrap"],
  image: "",
  generations: ["v1", "v1alpha"],
});
