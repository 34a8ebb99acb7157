import { createRequire } from "node:module";
import type * as ReflectionModule from "nice-grpc-server-reflection";
import { descriptorSet } from "./gen/descriptor-set.js";

/**
 * gRPC server reflection (grpcurl, Postman, grpcui) for berth's plugin
 * services, loaded at its first call. The reflection module brings
 * google-protobuf and decodes the whole descriptor set into its objects:
 * about 6 MiB of an idle daemon's RSS, for a service most daemons never
 * answer. Its definition is made here with the same paths and streaming
 * shape, its (de)serializers and implementation loading the module when a
 * call first needs them.
 */
type Reflection = typeof ReflectionModule;
type Service = Reflection["ServerReflectionService"];
type Implementation = ReturnType<Reflection["ServerReflection"]>;

let loaded: Reflection | undefined;
const reflection = (): Reflection =>
  (loaded ??= createRequire(import.meta.url)("nice-grpc-server-reflection") as Reflection);

const method = () => reflection().ServerReflectionService.serverReflectionInfo;

/** The service under `grpc.reflection.<generation>`: v1, and v1alpha, which grpcurl before 1.8.8 and other older tools ask for (the same messages under another package). */
function definition(generation: "v1" | "v1alpha"): Service {
  return {
    serverReflectionInfo: {
      path: `/grpc.reflection.${generation}.ServerReflection/ServerReflectionInfo`,
      requestStream: true,
      responseStream: true,
      requestSerialize: (value) => method().requestSerialize(value),
      requestDeserialize: (bytes) => method().requestDeserialize(bytes),
      responseSerialize: (value) => method().responseSerialize(value),
      responseDeserialize: (bytes) => method().responseDeserialize(bytes),
    },
  } as Service;
}

/** Both generations of the reflection service for `serviceNames`, each with its (shared, lazily made) implementation. */
export function reflectionServices(
  serviceNames: string[],
): { definition: Service; implementation: Implementation }[] {
  let made: Implementation | undefined;
  const implementation: Implementation = {
    serverReflectionInfo: (requests, context) =>
      (made ??= reflection().ServerReflection(descriptorSet, serviceNames)).serverReflectionInfo(
        requests,
        context,
      ),
  };
  return [
    { definition: definition("v1"), implementation },
    { definition: definition("v1alpha"), implementation },
  ];
}
