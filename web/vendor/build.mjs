// Bundles src/runway-avatars.js (Runway's browser SDK + livekit-client) into one ES module,
// dist/runway-avatars.js, which the server serves at /vendor/runway-avatars.js.
//   npm ci && npm run build
import { build } from "esbuild";

await build({
  entryPoints: ["src/runway-avatars.js"],
  outfile: "dist/runway-avatars.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "warning",
});
console.log("built dist/runway-avatars.js");
