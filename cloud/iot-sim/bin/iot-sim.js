#!/usr/bin/env node
// iot-sim entry point: parse options, start, print the ready line, stop cleanly on
// SIGTERM/SIGINT (and on stdin EOF with --exit-on-stdin-eof).

import { parseOptions, HELP } from '../lib/options.js';
import { Sim } from '../lib/sim.js';

let options;
try {
  options = parseOptions(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`iot-sim: ${e.message}\n\n${HELP}`);
  process.exit(2);
}
if (options.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

// stdout carries only the ready line: anything else that logs (the in-process Lambda's
// console.log included) goes to stderr, so a parent that reads one line and then stops
// reading can never block us on a full pipe.
for (const k of ['log', 'info', 'debug']) console[k] = (...a) => console.error(...a);

const sim = new Sim(options);
let stopping = false;
async function stop (code) {
  if (stopping) return;
  stopping = true;
  // never hang on the way out: a stuck close must not keep an orphan alive
  setTimeout(() => process.exit(code), 3000).unref();
  try { await sim.stop(); } catch (e) { process.stderr.write(`iot-sim: error while stopping: ${e.message}\n`); }
  process.exit(code);
}
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
// If whoever reads our stdout went away, there is nobody to serve: exit.
process.stdout.on('error', () => stop(0));
process.on('uncaughtException', (e) => {
  process.stderr.write(`iot-sim: uncaught exception: ${e && e.stack}\n`);
  stop(1);
});

try {
  const info = await sim.start();
  process.stdout.write(JSON.stringify(info) + '\n');
} catch (e) {
  process.stderr.write(`iot-sim: cannot start: ${e.message}\n`);
  await sim.stop().catch(() => {});
  process.exit(1);
}

if (options.exitOnStdinEof) {
  process.stdin.on('end', () => stop(0));
  process.stdin.on('error', () => stop(0));
  process.stdin.resume();
  // Belt and braces: if the parent dies while something else keeps our stdin open, we are
  // re-parented; notice that too.
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) stop(0); }, 1000).unref();
}
