import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "src/gen/", "node_modules/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      // Async generators that only yield are how gRPC message streams are written.
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["test", "describe", "suite", "it"] },
          ],
        },
      ],
    },
  },
  // The one-way boundary (ARCHITECTURE.md): the core knows drivers only by name,
  // through the registry; only the composition root names the built-in ones.
  // Drivers share code through plugins/kit, never by importing one another.
  {
    files: ["src/**/*.ts"],
    ignores: ["src/builtin-drivers.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["**/plugins/**"],
              message: "the core imports no driver: go through the DriverRegistry",
            },
          ],
        },
      ],
    },
  },
  ...["host", "docker", "kubernetes", "kit"].map((folder) => {
    const others = ["host", "docker", "kubernetes"].filter((driver) => driver !== folder);
    return {
      files: [`plugins/${folder}/**/*.ts`],
      rules: {
        "no-restricted-imports": [
          "error",
          {
            patterns: [
              {
                group: others.flatMap((driver) => [`../${driver}/**`, `**/plugins/${driver}/**`]),
                message:
                  folder === "kit"
                    ? "the kit serves every driver and imports none"
                    : "a driver imports no other driver: share code through plugins/kit",
              },
            ],
          },
        ],
      },
    };
  }),
  {
    files: ["**/*.js"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: "readonly", console: "readonly", Buffer: "readonly", URL: "readonly" },
    },
  },
);
