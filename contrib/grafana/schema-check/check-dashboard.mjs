// Checks Grafana dashboard JSON files against dashboard-schema.ts with the
// TypeScript compiler: each file must be plain JSON and, as an object literal,
// satisfy CheckedDashboard (no unknown keys, no wrong types or enum values).
//
//   node check-dashboard.mjs DASHBOARD.json...
//
// Prints `PATH: ok` or `PATH:LINE:COL: message` per problem (lines of the JSON
// file); exits 1 if any file fails, 2 on bad usage or a missing install.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
let ts;
try {
  ts = createRequire(import.meta.url)('typescript');
} catch {
  console.error(`TypeScript is not installed: run \`npm ci --prefix ${here}\``);
  process.exit(2);
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node check-dashboard.mjs DASHBOARD.json...');
  process.exit(2);
}

// The JSON goes verbatim between these lines, so its line N is line N + HEADER.
const header = [
  "import type { CheckedDashboard } from './dashboard-schema';",
  'export const dashboard = (',
];
const footer = ') satisfies CheckedDashboard;\n';

let failed = false;
const sources = new Map(); // virtual .ts path -> the JSON file it wraps
files.forEach((file, i) => {
  let text;
  try {
    text = readFileSync(file, 'utf8');
    JSON.parse(text);
  } catch (e) {
    console.log(`${file}: not a JSON file: ${e.message}`);
    failed = true;
    return;
  }
  const virtual = path.join(here, `__dashboard_${i}.ts`);
  sources.set(virtual, { file, code: `${header.join('\n')}\n${text}\n${footer}` });
});

const options = {
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  types: [],
};
const host = ts.createCompilerHost(options);
const { getSourceFile, fileExists, readFile } = host;
host.fileExists = (name) => sources.has(name) || fileExists.call(host, name);
host.readFile = (name) => sources.get(name)?.code ?? readFile.call(host, name);
host.getSourceFile = (name, version, ...rest) =>
  sources.has(name)
    ? ts.createSourceFile(name, sources.get(name).code, version)
    : getSourceFile.call(host, name, version, ...rest);

if (!fileExists.call(host, path.join(here, 'node_modules/@grafana/schema/package.json'))) {
  console.error(`@grafana/schema is not installed: run \`npm ci --prefix ${here}\``);
  process.exit(2);
}

const program = ts.createProgram([...sources.keys()], options, host);
const problems = new Map([...sources.values()].map(({ file }) => [file, []]));
for (const d of ts.getPreEmitDiagnostics(program)) {
  // One line per problem: the reasons a type does not fit, joined.
  const message = ts.flattenDiagnosticMessageText(d.messageText, ' ').replace(/\s+/g, ' ');
  const wrapped = d.file && sources.get(d.file.fileName);
  if (!d.file) {
    console.log(`typescript: ${message}`);
    failed = true;
  } else if (!wrapped) {
    // An error in dashboard-schema.ts or a library: the check itself is broken.
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    console.log(`${d.file.fileName}:${line + 1}:${character + 1}: ${message}`);
    failed = true;
  } else {
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    problems.get(wrapped.file).push(`${wrapped.file}:${line + 1 - header.length}:${character + 1}: ${message}`);
  }
}
for (const [file, list] of problems) {
  if (list.length === 0) {
    console.log(`${file}: ok`);
  } else {
    failed = true;
    for (const p of list) console.log(p);
  }
}
process.exit(failed ? 1 : 0);
