/** Every driver's README follows the same sections, and its examples' options are valid. */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { driverNames, findDriverFactory } from "../src/drivers.js";

const sections = ["Name", "Description", "Syntax", "Examples", "Options", "Metrics", "Health"];

for (const name of driverNames()) {
  test(`plugins/${name}/README.md has the driver sections and valid examples`, async () => {
    const readme = await readFile(new URL(`../../plugins/${name}/README.md`, import.meta.url), "utf8");
    const headings = [...readme.matchAll(/^## (.+)$/gm)].map((m) => m[1].trim());
    assert.deepEqual(headings, sections);
    const examples = readme.slice(readme.indexOf("## Examples"), readme.indexOf("## Options"));
    const commands = examples.split("\n").filter((line) => line.startsWith("berth serve"));
    assert.ok(commands.length > 0, "the Examples section shows berth serve commands");
    const factory = findDriverFactory(name);
    for (const command of commands) {
      assert.match(command, new RegExp(`--backend ${name}\\b`));
      const options = Object.fromEntries(
        [...command.matchAll(/--backend-opt (\S+?)=(\S+)/g)].map(([, key, value]) => [key, value]),
      );
      assert.doesNotThrow(() => factory.parseOptions(options), `options of: ${command}`);
    }
  });
}
