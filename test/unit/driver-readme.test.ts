/** Every driver's README follows the same sections, and its examples' options are valid. */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { builtInDrivers } from "../../src/builtin-drivers.js";
import { DriverRegistry } from "../../src/drivers.js";

const drivers = new DriverRegistry(builtInDrivers);

const sections = ["Name", "Description", "Syntax", "Examples", "Options", "Metrics", "Health"];

for (const name of drivers.names()) {
  test(`plugins/${name}/README.md has the driver sections and valid examples`, async () => {
    const readme = await readFile(new URL(`../../../plugins/${name}/README.md`, import.meta.url), "utf8");
    const headings = [...readme.matchAll(/^## (.+)$/gm)].map((m) => m[1].trim());
    assert.deepEqual(headings, sections);
    const examples = readme.slice(readme.indexOf("## Examples"), readme.indexOf("## Options"));
    const commands = examples.split("\n").filter((line) => line.startsWith("berth serve"));
    assert.ok(commands.length > 0, "the Examples section shows berth serve commands");
    const factory = await drivers.factory(name);
    for (const command of commands) {
      assert.match(command, new RegExp(`--backend ${name}\\b`));
      const options = Object.fromEntries(
        [...command.matchAll(/--backend-opt (\S+?)=(\S+)/g)].map(([, key, value]) => [key, value]),
      );
      const parsed = factory.optionsSchema.strict().safeParse(options);
      assert.ok(parsed.success, `options of: ${command}: ${parsed.error?.message}`);
    }
  });
}
