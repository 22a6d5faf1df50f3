// examples/deploy: the docker-compose.yml and Kubernetes manifest parse (the `yaml` package, as Compose and
// kubectl read YAML 1.2), have the structure their tools require, wire the health probes to /readyz and
// /healthz, and pass only flags that `rustasr serve` / `rustasr worker` accept. No container engine runs here.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

import { BIN, ensureDist, runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/golden.js';

const DIR = join(REPO_ROOT, 'examples', 'deploy');
const help = new Map<string, string>();

beforeAll(async () => {
  ensureDist('cli/index.js');
  for (const cmd of ['serve', 'worker']) help.set(cmd, (await runCli([cmd, '--help'], { PATH: process.env['PATH'] })).stdout);
  expect(existsSync(BIN)).toBe(true);
});

/** Every --flag of a rustasr command line is one its --help lists. */
function checkArgs(args: unknown): void {
  expect(Array.isArray(args)).toBe(true);
  const list = args as string[];
  const cmd = list[0]!;
  expect(['serve', 'worker']).toContain(cmd);
  for (const a of list.filter((x) => x.startsWith('--'))) expect(help.get(cmd), `${cmd} ${a}`).toContain(`${a} `);
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => {
  expect(v !== null && typeof v === 'object' && !Array.isArray(v)).toBe(true);
  return v as Obj;
};

describe('examples/deploy/docker-compose.yml', () => {
  const doc = () => obj(parse(readFileSync(join(DIR, 'docker-compose.yml'), 'utf8'), { merge: true, strict: true, uniqueKeys: true }));

  it('uses only Compose top-level keys and defines the server, balancer, broker and workers', () => {
    const d = doc();
    for (const k of Object.keys(d)) expect(['name', 'services', 'networks', 'volumes', 'configs', 'secrets'].includes(k) || k.startsWith('x-'), k).toBe(true);
    expect(Object.keys(obj(d['services'])).sort()).toEqual(['asr', 'lb', 'redis', 'worker']);
  });

  it('wires the health probes, the drain and the flags', () => {
    const d = doc();
    const s = obj(d['services']);
    const asr = obj(s['asr']);
    checkArgs(asr['command']);
    expect(asr['command']).toEqual(expect.arrayContaining(['--host', '0.0.0.0']));
    expect((obj(asr['healthcheck'])['test'] as string[]).join(' ')).toMatch(/http:\/\/127\.0\.0\.1:8080\/readyz$/);
    expect(asr['stop_signal']).toBe('SIGTERM');
    const build = obj(asr['build']);
    expect(existsSync(join(DIR, String(build['context']), String(build['dockerfile'])))).toBe(true);
    const lb = obj(s['lb']);
    expect(obj(obj(lb['depends_on'])['asr'])['condition']).toBe('service_healthy');
    expect((obj(lb['healthcheck'])['test'] as string[]).join(' ')).toMatch(/\/healthz$/);
    const nginx = String(obj(obj(d['configs'])['nginx'])['content']);
    expect(nginx).toMatch(/server asr:8080/);
    expect(nginx).toMatch(/proxy_pass http:\/\/asr;/);
    // The WebSocket route passes the Upgrade handshake on (`$$` is Compose's escape for a literal `$`).
    const realtime = /location = \/v1\/realtime \{([^}]*)\}/.exec(nginx)?.[1] ?? '';
    expect(realtime).toMatch(/proxy_set_header Upgrade \$\$http_upgrade;/);
    expect(realtime).toMatch(/proxy_set_header Connection "upgrade";/);
    const worker = obj(s['worker']);
    checkArgs(worker['command']);
    expect(worker['command']).toEqual(expect.arrayContaining(['--redis', 'redis://redis:6379']));
    expect(obj(obj(worker['depends_on'])['redis'])['condition']).toBe('service_healthy');
    expect(Object.keys(obj(d['volumes']))).toEqual(['redis-data']);
  });
});

describe('examples/deploy/kubernetes.yaml', () => {
  const docs = () =>
    parseAllDocuments(readFileSync(join(DIR, 'kubernetes.yaml'), 'utf8'), { strict: true, uniqueKeys: true }).map((d) => {
      expect(d.errors).toEqual([]);
      return obj(d.toJS());
    });

  it('holds well-formed objects whose Services select a Deployment', () => {
    const all = docs();
    const deployments = all.filter((d) => d['kind'] === 'Deployment');
    for (const d of all) {
      expect(['v1', 'apps/v1']).toContain(d['apiVersion']);
      expect(typeof obj(d['metadata'])['name']).toBe('string');
    }
    for (const d of deployments) {
      const spec = obj(d['spec']);
      expect(obj(obj(spec['selector'])['matchLabels'])).toEqual(obj(obj(obj(spec['template'])['metadata'])['labels']));
    }
    for (const svc of all.filter((d) => d['kind'] === 'Service')) {
      const sel = obj(obj(svc['spec'])['selector']);
      expect(deployments.some((d) => JSON.stringify(obj(obj(obj(d['spec'])['template'])['metadata'])['labels']) === JSON.stringify(sel))).toBe(true);
    }
  });

  it('probes /readyz and /healthz on the named port, and passes valid flags', () => {
    const all = docs();
    const server = all.find((d) => d['kind'] === 'Deployment' && obj(d['metadata'])['name'] === 'rustasr')!;
    const pod = obj(obj(obj(server['spec'])['template'])['spec']);
    const c = obj((pod['containers'] as unknown[])[0]);
    checkArgs(c['args']);
    expect((c['ports'] as Obj[]).map((p) => p['name'])).toContain('http');
    expect(obj(obj(c['readinessProbe'])['httpGet'])).toEqual({ path: '/readyz', port: 'http' });
    expect(obj(obj(c['livenessProbe'])['httpGet'])).toEqual({ path: '/healthz', port: 'http' });
    // The pod is given longer than the server's drain.
    const args = c['args'] as string[];
    expect(Number(pod['terminationGracePeriodSeconds'])).toBeGreaterThan(Number(args[args.indexOf('--drain-timeout') + 1]));
    const worker = all.find((d) => d['kind'] === 'Deployment' && obj(d['metadata'])['name'] === 'rustasr-worker')!;
    checkArgs(obj((obj(obj(obj(worker['spec'])['template'])['spec'])['containers'] as unknown[])[0])['args']);
  });
});
