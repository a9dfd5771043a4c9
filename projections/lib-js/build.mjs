// Build a JavaScript projection into a component of reel's `projection` world
// with the QuickJS engine (componentize-qjs).
//
// Run from a projection's folder (its `npm run build` does):
//   node ../lib-js/build.mjs
// It reads src/index.js and writes dist/<folder name>.wasm.
//
// componentize-qjs 0.4.5 cannot build a world that exports a function named
// `init`: its QuickJS runtime exports its own `init` (the Wizer pre-initializer,
// left in the finished component), and linking stops with "one or more
// duplicate items detected when collecting into set or map". So this script
//   1. builds against a copy of ../../wit/projection.wit, made in a temporary
//      folder, in which `export init` is spelled `export in1t` (same length);
//   2. exports the projection's `init` under that name too;
//   3. swaps the two names in the finished component's top-level export
//      section: the world's `init` is the projection's again and the runtime's
//      pre-initializer is left as `in1t`, an export nobody calls.
// Nothing else changes: the names have the same length, so no offset moves.
//
// Relative imports (the helper in ../lib-js) are resolved at build time, while
// Wizer snapshots the initialized engine: the module root is the `projections`
// folder, so no bundler is needed.

import { createRequire } from "node:module";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PLACEHOLDER = "in1t";

const libDir = dirname(fileURLToPath(import.meta.url));
const projectionsDir = resolve(libDir, "..");
const witFile = resolve(projectionsDir, "../wit/projection.wit");
const projectDir = process.cwd();
const name = basename(projectDir);
const entry = join(projectDir, "src", "index.js");
if (!existsSync(entry)) throw new Error(`no ${entry}`);
const out = join(projectDir, "dist", `${name}.wasm`);

const require = createRequire(join(projectDir, "package.json"));
const { componentize } = require("componentize-qjs");

const wit = readFileSync(witFile, "utf8");
const renamed = wit.replace(/^(\s*)export init: func/m, `$1export ${PLACEHOLDER}: func`);
if (renamed === wit) {
  throw new Error(`${witFile}: no \`export init: func\` to rename`);
}

// The entry the engine sees: the projection's module, plus `init` under the
// placeholder name. It is written to dist/ (git-ignored) because
// componentize-qjs wants the entry to exist as a file.
const wrapperPath = join(projectDir, "dist", "__reel_entry.js");
const wrapper = `export * from "../src/index.js";\nexport { init as ${PLACEHOLDER} } from "../src/index.js";\n`;
mkdirSync(dirname(wrapperPath), { recursive: true });
writeFileSync(wrapperPath, wrapper);

const witDir = mkdtempSync(join(tmpdir(), "reel-wit-"));
let component;
try {
  writeFileSync(join(witDir, "projection.wit"), renamed);
  const started = Date.now();
  ({ component } = await componentize({
    witPath: witDir,
    jsSource: wrapper,
    jsPath: wrapperPath,
    moduleRoot: projectionsDir,
    world: "projection",
    // Plain (not component-model async) exports: what reel's host calls.
    sync: true,
  }));
  console.error(`componentized ${entry} in ${Date.now() - started} ms`);
} finally {
  rmSync(witDir, { recursive: true, force: true });
  rmSync(wrapperPath, { force: true });
}

const fixed = swapExportNames(Buffer.from(component), "init", PLACEHOLDER);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, fixed);
console.error(`wrote ${out} (${fixed.length} bytes)`);

/// Swap two export names of equal length in the component's top-level export
/// sections (section id 11); nested components and core modules are skipped.
function swapExportNames(bytes, a, b) {
  if (a.length !== b.length) throw new Error("names must have the same length");
  const header = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
  header.forEach((byte, i) => {
    if (bytes[i] !== byte) throw new Error("not a WebAssembly component");
  });
  // An export name is encoded as 0x00 (plain name), its length, its bytes.
  const encoded = (s) => Buffer.from([0x00, s.length, ...Buffer.from(s, "utf8")]);
  const [na, nb] = [encoded(a), encoded(b)];
  const found = { [a]: [], [b]: [] };
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos++];
    let size = 0;
    let shift = 0;
    for (;;) {
      const byte = bytes[pos++];
      size |= (byte & 0x7f) << shift;
      shift += 7;
      if ((byte & 0x80) === 0) break;
    }
    if (id === 11) {
      const section = bytes.subarray(pos, pos + size);
      for (let i = 0; i + na.length <= section.length; i++) {
        if (section.subarray(i, i + na.length).equals(na)) found[a].push(pos + i);
        if (section.subarray(i, i + nb.length).equals(nb)) found[b].push(pos + i);
      }
    }
    pos += size;
  }
  if (found[a].length !== 1 || found[b].length !== 1) {
    throw new Error(`expected one top-level export each of \`${a}\` and \`${b}\`, found ${found[a].length} and ${found[b].length}`);
  }
  const outBytes = Buffer.from(bytes);
  nb.copy(outBytes, found[a][0]);
  na.copy(outBytes, found[b][0]);
  return outBytes;
}
