// Build a JavaScript projection into a component of reel's `projection` world
// with the QuickJS engine (componentize-qjs); or of the `reactor` world (see
// lib-js/reactor.js).
//
// Run from a projection's folder (its `npm run build` does):
//   node ../lib-js/build.mjs
// It reads src/index.js ($REEL_ENTRY when set) and writes dist/<folder name>.wasm
// ($REEL_MODULE_NAME.wasm when set).
//
// Relative imports (the helper in ../lib-js) are resolved at build time, while
// Wizer snapshots the initialized engine: the module root is the `projections`
// folder, so no bundler is needed.

import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
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
// `src/index.js`, or $REEL_ENTRY (relative to the project's folder).
const entry = join(projectDir, process.env.REEL_ENTRY || join("src", "index.js"));
if (!existsSync(entry)) throw new Error(`no ${entry}`);
const out = join(projectDir, "dist", `${name}.wasm`);
// `projection`, or `reactor` for a module that emits (REEL_WORLD, or
// "reel": { "world": ... } in its package.json).
const world = process.env.REEL_WORLD || packageWorld() || "projection";
// `import ... from "x"`, `export ... from "x"`, `import "x"`, `import("x")`.
const IMPORTS = /\b(?:import|export)\s*(?:[\w$*{},\s]*?\bfrom\s*)?["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']\s*\)/g;

const require = createRequire(join(projectDir, "package.json"));
const { componentize } = require("componentize-qjs");
const toolchain = JSON.parse(readFileSync(require.resolve("componentize-qjs/package.json"), "utf8")).version;

// The same sources give the same bytes, so reel's compile cache (keyed by the
// file's hash) hits on a redeploy. componentize-qjs alone does not: its Wizer
// snapshot keeps what the build machine's random numbers and clock were while
// the engine started (the QuickJS runtime's hash-map seeds, Math.random's
// state), and no option seeds them. So each build is kept under the digest of
// everything it is made from, and a build from the same inputs hands back
// those bytes (docs/languages/javascript.md).
const digest = inputsDigest();
const cacheDir = join(projectDir, "node_modules", ".cache", "reel-build");
const cached = join(cacheDir, `${digest}.wasm`);
let component;
if (existsSync(cached)) {
  component = readFileSync(cached);
  console.error(`${entry}: unchanged since an earlier build (${digest.slice(0, 12)}), same bytes`);
} else {
  const started = Date.now();
  ({ component } = await componentize({
    witPath: dirname(witFile),
    jsSource: readFileSync(entry, "utf8"),
    jsPath: entry,
    moduleRoot: projectionsDir,
    world,
    // Plain (not component-model async) exports: what reel's host calls.
    sync: true,
  }));
  console.error(`componentized ${entry} in ${Date.now() - started} ms`);
  keep(component);
}
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, Buffer.from(component));
console.error(`wrote ${out} (${component.length} bytes)`);

/// A digest of what the component is made of: this script, the toolchain's
/// version, the WIT, the entry and every module it imports by path (followed
/// from the import statements), and the lock file for packages imported by
/// name.
function inputsDigest() {
  const hash = createHash("sha256");
  const add = (label, bytes) => hash.update(`${label}\0${bytes.length}\0`).update(bytes);
  add("build.mjs", readFileSync(fileURLToPath(import.meta.url)));
  add("componentize-qjs", toolchain);
  if (world !== "projection") add("world", world);
  for (const file of readdirSync(dirname(witFile)).sort()) {
    const path = join(dirname(witFile), file);
    if (statSync(path).isFile()) add(`wit/${file}`, readFileSync(path));
  }
  const seen = new Set();
  const pending = [entry];
  let byName = false;
  while (pending.length > 0) {
    const file = pending.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(file, "utf8");
    add(file, text);
    for (const [, a, b] of text.matchAll(IMPORTS)) {
      const specifier = a ?? b;
      if (specifier.startsWith(".")) pending.push(resolve(dirname(file), specifier));
      else if (specifier.startsWith("/")) pending.push(join(projectionsDir, specifier));
      else if (!specifier.startsWith("reel:")) byName = true;
    }
  }
  const lock = join(projectDir, "package-lock.json");
  if (byName && existsSync(lock)) add("package-lock.json", readFileSync(lock));
  return hash.digest("hex");
}

/// The world named in the project's package.json (`reel.world`), if any.
function packageWorld() {
  const file = join(projectDir, "package.json");
  if (!existsSync(file)) return null;
  const world = JSON.parse(readFileSync(file, "utf8")).reel?.world;
  return typeof world === "string" ? world : null;
}

/// Keep `component` as the build of these inputs, with the 8 newest others.
function keep(component) {
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(cached, Buffer.from(component));
  const builds = readdirSync(cacheDir)
    .filter((f) => f.endsWith(".wasm"))
    .map((f) => ({ path: join(cacheDir, f), at: statSync(join(cacheDir, f)).mtimeMs }))
    .sort((x, y) => y.at - x.at);
  for (const old of builds.slice(9)) rmSync(old.path, { force: true });
}
