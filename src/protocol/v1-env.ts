/**
 * plugin.v1's CreateRequest.env (field 3) in both encodings runners send:
 * `repeated string` entries "KEY=VALUE", and `map<string, string>` entries,
 * each a message with the key in field 1 and the value in field 2. A
 * "KEY=VALUE" string never starts with byte 0x0a or 0x12 (the tags of
 * fields 1 and 2), so an entry that does, and parses whole as such a
 * message, is a map entry.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { invalidArgument } from "../errors.js";
import { splitKeyValue } from "../key-value.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A map entry's key and value, or undefined if the bytes are not one. */
function mapEntry(bytes: Uint8Array): [string, string] | undefined {
  if (bytes.length === 0 || (bytes[0] !== 0x0a && bytes[0] !== 0x12)) return undefined;
  try {
    const reader = new BinaryReader(bytes);
    let key = "";
    let value = "";
    while (reader.pos < bytes.length) {
      const [field, wireType] = reader.tag();
      if (wireType !== WireType.LengthDelimited || (field !== 1 && field !== 2)) return undefined;
      const text = utf8.decode(reader.bytes());
      if (field === 1) key = text;
      else value = text;
    }
    return [key, value];
  } catch {
    // Not a whole message (or not UTF-8): then it is no map entry, and is read as KEY=VALUE text.
    return undefined;
  }
}

/** The env of a v1 Create, whichever encoding each entry came in. */
export function parseV1CreateEnv(entries: Uint8Array[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [index, bytes] of entries.entries()) {
    const entry = mapEntry(bytes);
    if (entry) {
      if (!entry[0]) throw invalidArgument(`env entry ${index + 1} of Create is a map entry without a key`);
      env[entry[0]] = entry[1];
      continue;
    }
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw invalidArgument(`env entry ${index + 1} of Create is neither KEY=VALUE text nor a map entry`);
    }
    const pair = splitKeyValue(text);
    if (!pair)
      throw invalidArgument(`env entry ${index + 1} of Create is not KEY=VALUE (it has no name before "=")`);
    env[pair[0]] = pair[1];
  }
  return env;
}
