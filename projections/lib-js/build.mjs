// Build a JavaScript projection into a component of reel's `projection` world
// with the QuickJS engine (componentize-qjs).
//
// Run from a projection's folder (its `npm run build` does):
//   node ../lib-js/build.mjs
// It reads src/index.js and writes dist/<folder name>.wasm ($REEL_MODULE_NAME.wasm
// when set).
//
// Relative imports (the helper in ../lib-js) are resolved at build time, while
// Wizer snapshots the initialized engine: the module root is the `projections`
// folder, so no bundler is needed.

import { createRequire } from "node:module";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const libDir = dirname(fileURLToPath(import.meta.url));
// In this repository the helper sits in projections/lib-js and the WIT in
// wit/; a scaffold from `reel new` says where its copies are.
const projectionsDir = process.env.REEL_MODULE_ROOT ? resolve(process.env.REEL_MODULE_ROOT) : resolve(libDir, "..");
const witFile = process.env.REEL_WIT
  ? resolve(process.env.REEL_WIT, "projection.wit")
  : resolve(libDir, "../../wit/projection.wit");
const projectDir = process.cwd();
const name = process.env.REEL_MODULE_NAME || basename(projectDir);
const entry = join(projectDir, "src", "index.js");
if (!existsSync(entry)) throw new Error(`no ${entry}`);
const out = join(projectDir, "dist", `${name}.wasm`);

const require = createRequire(join(projectDir, "package.json"));
const { componentize } = require("componentize-qjs");

const started = Date.now();
const { component } = await componentize({
  witPath: dirname(witFile),
  jsSource: readFileSync(entry, "utf8"),
  jsPath: entry,
  moduleRoot: projectionsDir,
  world: "projection",
  // Plain (not component-model async) exports: what reel's host calls.
  sync: true,
});
console.error(`componentized ${entry} in ${Date.now() - started} ms`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, Buffer.from(component));
console.error(`wrote ${out} (${component.length} bytes)`);
