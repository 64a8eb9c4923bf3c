// Bundles src/app.jsx (React, Runway's React SDK and its LiveKit dependencies) into one ES module,
// dist/react-sdk-app.js, which tests/e2e/test_react_sdk.py serves from a page of its own origin.
//   npm ci && npm run build      (scripts/install.sh --test does it; the test does it when missing)
import { build } from "esbuild";

await build({
  entryPoints: ["src/app.jsx"],
  outfile: "dist/react-sdk-app.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"development"' },
  minify: false,
  logLevel: "warning",
});
console.log("built dist/react-sdk-app.js");
