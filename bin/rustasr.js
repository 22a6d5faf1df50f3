#!/usr/bin/env node
// Launches the rustasr CLI (compiled to dist/ by `npm run build`).
import('../dist/esm/cli.js').then((cli) => cli.main(process.argv)).catch((err) => {
  console.error(err);
  process.exit(1);
});
