// `rustasr devices [--json]`: which compute devices this build and machine can use, and why not.
import type { Sade } from 'sade';

import { devices, type DeviceStatus } from '../api/devices.js';
import { RustAsrError } from '../errors.js';
import { EXIT_FAILURE } from './common.js';


/** The device table: one line per kind (cpu, cuda, metal) with available yes/no, name, and why not. */
export function formatDevices(list: readonly DeviceStatus[]): string {
  const rows = list.map((d) => [d.kind, d.available ? 'yes' : 'no', d.name === '' ? '-' : d.name, d.available ? '' : d.reason]);
  const head = ['DEVICE', 'AVAILABLE', 'NAME', 'WHY NOT'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows]
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd() + '\n')
    .join('');
}

/** Probes the devices and prints them (a table, or a JSON array with `json`). */
export async function runDevices(opts: { json?: boolean; out?: NodeJS.WritableStream } = {}): Promise<DeviceStatus[]> {
  const out = opts.out ?? process.stdout;
  const list = await devices();
  out.write(opts.json ? JSON.stringify(list) + '\n' : formatDevices(list));
  return list;
}

/** Adds `devices` to the rustasr CLI program. Exit code 0 whatever is available. */
export function registerDevices(prog: Sade): Sade {
  prog
    .command('devices')
    .describe('List the compute devices (cpu, cuda, metal): available or not, name, and why not.')
    .option('--json', 'Print a JSON array of {kind, available, name, reason}', false)
    .example('devices --json')
    .action(async (flags: { json?: unknown }) => {
      try {
        await runDevices({ json: flags.json === true });
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exitCode = EXIT_FAILURE;
      }
    });
  return prog;
}
