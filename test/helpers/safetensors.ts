// Test-only helpers to take a .safetensors file apart and write altered copies of it.
import { readFileSync, writeFileSync } from 'node:fs';

export interface TensorEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface SafetensorsParts {
  header: Record<string, TensorEntry | Record<string, string>>;
  data: Buffer;
}

export function readSafetensors(path: string): SafetensorsParts {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as SafetensorsParts['header'];
  return { header, data: buf.subarray(8 + n) };
}

export function writeSafetensors(path: string, parts: SafetensorsParts): void {
  const json = Buffer.from(JSON.stringify(parts.header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, parts.data]));
}

/** Removes one tensor from the header (its bytes stay in the data section, unreferenced). */
export function withoutTensor(parts: SafetensorsParts, name: string): SafetensorsParts {
  const header = { ...parts.header };
  delete header[name];
  return { header, data: parts.data };
}

export function withEntry(parts: SafetensorsParts, name: string, change: Partial<TensorEntry>): SafetensorsParts {
  const old = parts.header[name] as TensorEntry;
  return { header: { ...parts.header, [name]: { ...old, ...change } }, data: parts.data };
}
