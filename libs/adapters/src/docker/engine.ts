/**
 * A thin Docker Engine API client over its unix socket (only what the agent needs so far). Answers are parsed
 * here, once, with zod: callers get typed results (`DockerNetworkInspect`), never `unknown`.
 */
import * as http from 'node:http';
import { z } from 'zod';
import { DockerContainerSummary, DockerNetworkInspect, UnderlayError } from '@underlay/core';

/** POST /networks/create answers the new network's id. */
const CreatedNetwork = z.looseObject({ Id: z.string().min(1) });
/** GET /networks: an array; only the ids are read from it by `listNetworkIds` (an entry without one is skipped). */
const NetworkList = z.array(z.unknown());

/** Docker answered with an error status (`status`; 0 when it sent none). Retriable for 5xx (the daemon may recover). */
export class DockerApiError extends UnderlayError {
  constructor(readonly status: number, message: string) {
    super('docker-api', message, { retriable: status >= 500 });
    this.name = 'DockerApiError';
  }
}

/** Docker's 404 (no such object) as a value; other failures stay errors. */
async function notFoundAs<T, F>(p: Promise<T>, value: F): Promise<T | F> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof DockerApiError && e.status === 404) return value;
    throw e;
  }
}

export class DockerEngine {
  private readonly socketPath: string;

  /** `url` is `unix:///var/run/docker.sock`. */
  constructor(url: string) {
    if (!url.startsWith('unix://')) throw new Error(`only unix:// Docker endpoints are supported, got ${url}`);
    this.socketPath = url.slice('unix://'.length);
  }

  private get<T>(path: string, timeoutMs = 5_000): Promise<T> {
    return this.request<T>('GET', path, undefined, timeoutMs);
  }

  private request<T>(method: string, path: string, body?: unknown, timeoutMs = 5_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request({ socketPath: this.socketPath, path, method, timeout: timeoutMs, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {} }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (!res.statusCode || res.statusCode < 200 || res.statusCode > 299) {
            let msg = body;
            try {
              msg = (JSON.parse(body) as { message?: string }).message ?? body;
            } catch {
              /* plain text */
            }
            return reject(new DockerApiError(res.statusCode ?? 0, `Docker ${path}: ${res.statusCode} ${msg.trim()}`));
          }
          if (body.trim() === '') return resolve(undefined as T);
          try {
            resolve(JSON.parse(body) as T);
          } catch (e) {
            reject(e);
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`Docker ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * GET /networks/{id}: the network with its containers, or undefined when Docker has none by that id. An answer
   * that does not match DockerNetworkInspect throws (zod's error).
   */
  async inspectNetwork(id: string): Promise<DockerNetworkInspect | undefined> {
    const raw = await notFoundAs(this.get<unknown>(`/networks/${encodeURIComponent(id)}`), undefined);
    return raw === undefined ? undefined : DockerNetworkInspect.parse(raw);
  }

  /** GET /containers/{id}/json's State.Pid: the running container's process id (undefined: not running or no such container). */
  async containerPid(id: string): Promise<number | undefined> {
    const raw = await notFoundAs(this.get<unknown>(`/containers/${encodeURIComponent(id)}/json`), undefined);
    const pid = (raw as { State?: { Pid?: unknown } } | undefined)?.State?.Pid;
    return typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** GET /networks filtered by driver, each parsed (Docker's list shows no containers). One malformed entry throws. */
  async listNetworks(driver: string): Promise<DockerNetworkInspect[]> {
    return (await this.listRaw(driver)).map((n) => DockerNetworkInspect.parse(n));
  }

  /** The ids of the networks of `driver` (entries without an id are skipped, nothing else is read). */
  async listNetworkIds(driver: string): Promise<string[]> {
    const ids: string[] = [];
    for (const n of await this.listRaw(driver)) {
      const id = (n as { Id?: unknown } | null)?.Id;
      if (typeof id === 'string' && id) ids.push(id);
    }
    return ids;
  }

  private async listRaw(driver: string): Promise<unknown[]> {
    const filters = encodeURIComponent(JSON.stringify({ driver: [driver] }));
    return NetworkList.parse(await this.get<unknown>(`/networks?filters=${filters}`));
  }

  /** POST /networks/create; resolves to the new network's id. Docker calls the plugin during this request. */
  async createNetwork(body: Record<string, unknown>, timeoutMs = 60_000): Promise<string> {
    return CreatedNetwork.parse(await this.request<unknown>('POST', '/networks/create', body, timeoutMs)).Id;
  }

  /** DELETE /networks/{id}; false when Docker had no such network. */
  deleteNetwork(id: string, timeoutMs = 60_000): Promise<boolean> {
    return notFoundAs(this.request('DELETE', `/networks/${encodeURIComponent(id)}`, undefined, timeoutMs).then(() => true), false);
  }

  /**
   * GET /containers/json?all=1: every container with its networks. Docker answers it from its replica of the
   * containers' state, without taking a container's lock: a plugin call made while a container starts may use it.
   * Malformed entries are skipped.
   */
  async listContainers(timeoutMs = 5_000): Promise<DockerContainerSummary[]> {
    const out: DockerContainerSummary[] = [];
    for (const c of NetworkList.parse(await this.get<unknown>('/containers/json?all=1', timeoutMs))) {
      const r = DockerContainerSummary.safeParse(c);
      if (r.success) out.push(r.data);
    }
    return out;
  }

  /** The network's Docker name (undefined when Docker has no such network). */
  async networkName(id: string): Promise<string | undefined> {
    return (await this.inspectNetwork(id))?.Name;
  }
}
