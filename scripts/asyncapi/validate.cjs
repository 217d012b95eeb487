// node scripts/asyncapi/validate.cjs TOOLS_DIR DOCUMENT
// Parses DOCUMENT (AsyncAPI, JSON or YAML) with @asyncapi/parser installed in TOOLS_DIR
// (scripts/asyncapi-tools) and prints its diagnostics as JSON, one array on stdout.
// Exits 1 if any diagnostic is an error (severity 0), 0 otherwise.
"use strict";
const fs = require("fs");
const path = require("path");

async function main() {
  const [toolsDir, document] = process.argv.slice(2);
  if (!toolsDir || !document) {
    console.error("usage: node validate.cjs TOOLS_DIR DOCUMENT");
    process.exit(2);
  }
  const { Parser } = require(path.join(path.resolve(toolsDir), "node_modules", "@asyncapi", "parser"));
  const parser = new Parser();
  const { document: parsed, diagnostics } = await parser.parse(fs.readFileSync(document, "utf8"));
  const out = diagnostics.map((d) => ({
    code: d.code,
    severity: d.severity,
    message: d.message,
    path: d.path,
  }));
  console.log(JSON.stringify({ parsed: parsed !== undefined, diagnostics: out }));
  process.exit(out.some((d) => d.severity === 0) ? 1 : 0);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(3);
});
