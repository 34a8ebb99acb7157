/**
 * A request whose bytes are not the message its method takes. grpc-js
 * answers a decoder that throws with INTERNAL, as if berth were at fault;
 * so the decoders of berth's services return this instead, and
 * malformedRequestMiddleware answers it with INVALID_ARGUMENT.
 */
export class MalformedRequest {
  constructor(
    /** The method the request was sent to (service/method). */
    readonly method: string,
    /** What the decoder found wrong (a wire type, an offset: never the bytes themselves). */
    readonly problem: string,
  ) {}

  describe(): string {
    return `the request to ${this.method} is not a valid protobuf message of its type (${this.problem}); is the client built from this protocol's .proto?`;
  }
}

interface MessageType {
  decode(input: Uint8Array, length?: number): unknown;
}

interface ServiceDefinition {
  fullName: string;
  methods: Record<string, { name: string; requestType: MessageType }>;
}

/** The service definition with each method's decoder answering a MalformedRequest instead of throwing. */
export function refusingMalformedRequests<D extends ServiceDefinition>(definition: D): D {
  const methods = Object.fromEntries(
    Object.entries(definition.methods).map(([key, method]) => {
      const requestType = {
        ...method.requestType,
        decode(input: Uint8Array, length?: number) {
          try {
            return method.requestType.decode(input, length);
          } catch (err) {
            const problem = err instanceof Error ? err.message : String(err);
            return new MalformedRequest(`${definition.fullName}/${method.name}`, problem);
          }
        },
      };
      return [key, { ...method, requestType }];
    }),
  );
  return { ...definition, methods };
}
